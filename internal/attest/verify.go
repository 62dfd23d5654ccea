package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/google/go-tpm/tpm2"
)

// ReportSize is the size of the SNP ATTESTATION_REPORT (signature at 0x2a0).
const ReportSize = abi.ReportSize

// Evidence is what a guest reads from configfs-tsm for one call.
type Evidence struct {
	Report    []byte // outblob: the SNP attestation report
	Nonce     []byte // inblob: the 64-byte nonce
	Manifest  []byte // manifestblob: the vTPM manifest or the services table
	CertTable []byte // auxblob: the host's certificate table (optional)
	VCEK      []byte // the VCEK or VLEK certificate, DER (optional)
}

// Expected is a vTPM the manifest may name.
type Expected struct {
	Name   string   // how to call it: an image, a certificate, a fleet VM
	SHA512 [64]byte // of its vTPM manifest
}

// Policy are the optional requirements on the report.
type Policy struct {
	Measurement []byte  // MEASUREMENT, 48 bytes
	MinTCB      *uint64 // every byte (one security patch level each) of REPORTED_TCB at least this
	GuestPolicy *uint64 // POLICY, exactly
	ChipID      []byte  // CHIP_ID, 64 bytes
	ReportID    []byte  // REPORT_ID, 32 bytes
}

// Options control Verify.
type Options struct {
	// Roots are the trusted ARK and ASK (or ASVK) per product line; nil
	// means AMD's, as go-sev-guest embeds them.
	Roots map[string][]*trust.AMDRootCerts
	// Fetch lets go-sev-guest download missing certificates from AMD's
	// key distribution service.
	Fetch bool
	// Now is when certificates must be valid (zero: now).
	Now    time.Time
	Expect []Expected
	Policy Policy
}

// Check is the outcome of one check.
type Check struct {
	Name   string `json:"check"`
	Status string `json:"status"` // pass, fail or skip
	Detail string `json:"detail"`
}

// Result is the outcome of Verify.
type Result struct {
	Accepted       bool           `json:"accepted"`
	VTPM           string         `json:"vtpm,omitempty"` // the Expected it matched
	ManifestKind   string         `json:"manifest_kind"`  // vtpm or services
	ManifestSHA512 string         `json:"vtpm_manifest_sha512,omitempty"`
	Signer         string         `json:"signer,omitempty"` // VCEK or VLEK
	ProductLine    string         `json:"product_line,omitempty"`
	Report         *ReportSummary `json:"report,omitempty"`
	Checks         []Check        `json:"checks"`
}

// ReportSummary shows the fields of the report a verifier looks at.
type ReportSummary struct {
	Version     uint32 `json:"version"`
	VMPL        uint32 `json:"vmpl"`
	Policy      string `json:"policy"`
	Measurement string `json:"measurement"`
	ReportData  string `json:"report_data"`
	ReportID    string `json:"report_id"`
	ChipID      string `json:"chip_id"`
	ReportedTCB string `json:"reported_tcb"`
}

// Failed returns the failed checks.
func (r *Result) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status == "fail" {
			out = append(out, c)
		}
	}
	return out
}

// debugPolicyBit is POLICY bit 19 (DEBUG: the hypervisor may read and
// write guest memory).
const debugPolicyBit = 1 << 19

// Verify checks the evidence offline: the report's signature chain to
// AMD's roots, version 2 or later, VMPL 0, no debug, REPORT_DATA =
// SHA-512(nonce || manifest), and that the vTPM manifest is one of
// o.Expect, then the optional policy. Every check runs (those that need
// a parsed report are skipped without one).
func Verify(ev Evidence, o Options) *Result {
	r := &Result{ManifestKind: "vtpm"}
	add := func(name, status, format string, a ...any) {
		r.Checks = append(r.Checks, Check{Name: name, Status: status, Detail: fmt.Sprintf(format, a...)})
	}
	var rep *spb.Report
	switch {
	case len(ev.Report) != ReportSize:
		add("report", "fail", "%d bytes; an SNP ATTESTATION_REPORT is %d (outblob, read whole)", len(ev.Report), ReportSize)
	default:
		var err error
		if rep, err = abi.ReportToProto(ev.Report); err != nil {
			add("report", "fail", "not an SNP attestation report: %v", err)
		} else {
			add("report", "pass", "%d bytes, version %d", len(ev.Report), rep.GetVersion())
		}
	}
	names := []string{"signature", "version", "vmpl", "debug", "report-data"}
	if rep == nil {
		for _, n := range names {
			add(n, "skip", "no report to check")
		}
	} else {
		r.Report = summary(rep)
		signer, pl, err := checkSignature(rep, ev, o)
		r.Signer, r.ProductLine = signer, pl
		if err != nil {
			add("signature", "fail", "%v", err)
		} else {
			add("signature", "pass", "signed by the %s of an AMD %s, chained to the ASK and ARK", signer, pl)
		}
		if v := rep.GetVersion(); v < 2 {
			add("version", "fail", "report version %d; version 2 or later is required", v)
		} else {
			add("version", "pass", "version %d", v)
		}
		if v := rep.GetVmpl(); v != 0 {
			add("vmpl", "fail", "the report was requested at VMPL %d: only a VMPL 0 report (the SVSM's) binds the manifest, a guest kernel at VMPL %d chooses its REPORT_DATA freely", v, v)
		} else {
			add("vmpl", "pass", "VMPL 0 (requested by the SVSM)")
		}
		if rep.GetPolicy()&debugPolicyBit != 0 {
			add("debug", "fail", "the guest policy 0x%x allows debugging (bit 19): the host can read and change guest memory", rep.GetPolicy())
		} else {
			add("debug", "pass", "policy 0x%x does not allow debugging", rep.GetPolicy())
		}
	}
	if len(ev.Nonce) != NonceSize {
		add("nonce", "fail", "%d bytes; the SVSM takes a nonce of exactly %d bytes (inblob)", len(ev.Nonce), NonceSize)
	} else {
		add("nonce", "pass", "%d bytes", NonceSize)
	}
	vtpm, err := vtpmManifest(ev.Manifest)
	if IsServicesTable(ev.Manifest) {
		r.ManifestKind = "services"
	}
	if rep != nil {
		want := ReportData(ev.Nonce, ev.Manifest)
		if got := rep.GetReportData(); !bytes.Equal(got, want[:]) {
			add("report-data", "fail", "REPORT_DATA %s is not SHA-512(nonce || manifest) %s: the report was not made for this nonce and %s", hex.EncodeToString(got), hex.EncodeToString(want[:]), map[string]string{"vtpm": "vTPM manifest", "services": "services table"}[r.ManifestKind])
		} else {
			add("report-data", "pass", "REPORT_DATA = SHA-512(nonce || %s)", map[string]string{"vtpm": "vTPM manifest", "services": "services table"}[r.ManifestKind])
		}
	}
	if err != nil {
		add("manifest", "fail", "%v", err)
	} else {
		d := Digest(vtpm)
		r.ManifestSHA512 = hex.EncodeToString(d[:])
		if name, ok := match(o.Expect, d); ok {
			r.VTPM = name
			add("manifest", "pass", "the vTPM manifest is the EK of %s", name)
		} else {
			add("manifest", "fail", "%s", mismatch(vtpm, o.Expect))
		}
	}
	if rep != nil {
		policyChecks(rep, o.Policy, add)
	}
	r.Accepted = len(r.Failed()) == 0
	return r
}

func summary(rep *spb.Report) *ReportSummary {
	return &ReportSummary{
		Version: rep.GetVersion(), VMPL: rep.GetVmpl(), Policy: fmt.Sprintf("0x%x", rep.GetPolicy()),
		Measurement: hex.EncodeToString(rep.GetMeasurement()), ReportData: hex.EncodeToString(rep.GetReportData()),
		ReportID: hex.EncodeToString(rep.GetReportId()), ChipID: hex.EncodeToString(rep.GetChipId()),
		ReportedTCB: fmt.Sprintf("0x%016x", rep.GetReportedTcb()),
	}
}

// vtpmManifest returns the vTPM's manifest: the blob itself, or the vTPM
// entry of a services table.
func vtpmManifest(b []byte) ([]byte, error) {
	if !IsServicesTable(b) {
		if len(b) == 0 {
			return nil, fmt.Errorf("the manifest is empty (manifestblob of a report made with service_provider svsm)")
		}
		return b, nil
	}
	svcs, err := ParseServices(b)
	if err != nil {
		return nil, err
	}
	var found []byte
	for _, s := range svcs {
		if s.GUID == VTPMGUID {
			if found != nil {
				return nil, fmt.Errorf("services table: two vTPM entries")
			}
			found = s.Data
		}
	}
	if found == nil {
		return nil, fmt.Errorf("the services table has no vTPM entry (GUID %s): this SVSM runs no vTPM", VTPMGUID)
	}
	return found, nil
}

func match(exp []Expected, d [64]byte) (string, bool) {
	for _, e := range exp {
		if e.SHA512 == d {
			return e.Name, true
		}
	}
	return "", false
}

// mismatch explains why a vTPM manifest is none of the expected ones.
func mismatch(vtpm []byte, exp []Expected) string {
	what := "the expected vTPM"
	switch {
	case len(exp) == 1:
		what = exp[0].Name
	case len(exp) > 1:
		what = fmt.Sprintf("any of the %d expected vTPMs", len(exp))
	}
	if len(vtpm) > 2 && int(binary.BigEndian.Uint16(vtpm)) == len(vtpm)-2 {
		if _, ok := match(exp, Digest(vtpm[2:])); ok {
			return fmt.Sprintf("the manifest starts with a TPM2B size field (0x%04x) before the EK of %s; the SVSM reports the TPMT_PUBLIC alone, so this manifest is not what the SVSM returned", len(vtpm)-2, what)
		}
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](vtpm)
	if err != nil || !bytes.Equal(tpm2.Marshal(pub), vtpm) {
		return fmt.Sprintf("the vTPM manifest (%d bytes) is not a TPMT_PUBLIC, so it is not the EK of %s", len(vtpm), what)
	}
	desc := "a key"
	if k, err := tpm2.Pub(*pub); err == nil {
		if der, err := x509.MarshalPKIXPublicKey(k); err == nil {
			s := sha256.Sum256(der)
			desc = "the key sha256:" + hex.EncodeToString(s[:])
		}
	}
	return fmt.Sprintf("the vTPM manifest is the EK of another TPM (%s), not the EK of %s", desc, what)
}

// checkSignature verifies the report's signature with the VCEK or VLEK and
// that certificate's chain to the trusted ASK and ARK.
func checkSignature(rep *spb.Report, ev Evidence, o Options) (string, string, error) {
	info, err := abi.ParseSignerInfo(rep.GetSignerInfo())
	if err != nil {
		return "", "", err
	}
	signer := info.SigningKey.String()
	chain := &spb.CertificateChain{Extras: map[string][]byte{}}
	if len(ev.CertTable) > 0 {
		ct := new(abi.CertTable)
		if err := ct.Unmarshal(ev.CertTable); err != nil {
			return signer, "", fmt.Errorf("the certificate table (auxblob) does not parse: %v", err)
		}
		chain = ct.Proto()
	}
	if ev.VCEK != nil {
		switch info.SigningKey {
		case abi.VcekReportSigner:
			chain.VcekCert = ev.VCEK
		case abi.VlekReportSigner:
			chain.VlekCert = ev.VCEK
		}
	}
	pl := ""
	if fms := rep.GetCpuid1EaxFms(); fms != 0 {
		pl = kds.ProductLineFromFms(fms)
	}
	switch info.SigningKey {
	case abi.VcekReportSigner:
		if len(chain.GetVcekCert()) == 0 && !o.Fetch {
			where := ""
			if pl != "" {
				where = " (" + kds.VCEKCertURL(pl, rep.GetChipId(), kds.TCBVersion(rep.GetReportedTcb())) + ")"
			}
			return signer, pl, fmt.Errorf("the report is signed with a VCEK and no VCEK certificate was given: give the certificate table (--certs, the auxblob) or the VCEK from AMD's key distribution service%s (--vcek), or allow --fetch", where)
		}
	case abi.VlekReportSigner:
		if len(chain.GetVlekCert()) == 0 {
			return signer, pl, fmt.Errorf("the report is signed with a VLEK and no VLEK certificate was given: give the certificate table (--certs, the auxblob) or the VLEK certificate (--vcek); the cloud provider has it, AMD's key distribution service does not serve VLEKs")
		}
	default:
		return signer, pl, fmt.Errorf("the report is not signed by an AMD endorsement key (signing key %s)", signer)
	}
	roots := o.Roots
	if roots == nil {
		if roots, err = EmbeddedRoots(); err != nil {
			return signer, pl, err
		}
	}
	vo := &verify.Options{DisableCertFetching: !o.Fetch, Now: o.Now, TrustedRoots: roots}
	if o.Fetch {
		vo.Getter = trust.DefaultHTTPSGetter()
	}
	if vo.Now.IsZero() {
		vo.Now = time.Now()
	}
	att := &spb.Attestation{Report: rep, CertificateChain: chain}
	if err := verify.SnpAttestation(att, vo); err != nil {
		return signer, pl, err
	}
	if pl == "" {
		pl = productLine(att, info.SigningKey)
	}
	return signer, pl, nil
}

// productLine reads the product line from the endorsement key's
// certificate.
func productLine(att *spb.Attestation, key abi.ReportSigner) string {
	der := att.GetCertificateChain().GetVcekCert()
	if key == abi.VlekReportSigner {
		der = att.GetCertificateChain().GetVlekCert()
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return ""
	}
	exts, err := kds.CertificateExtensions(c, key)
	if err != nil {
		return ""
	}
	p, err := kds.ParseProductName(exts.ProductName, key)
	if err != nil {
		return ""
	}
	return kds.ProductLine(p)
}

// EmbeddedRoots are AMD's ARK with the ASK (VCEK) and the ASVK (VLEK) of
// each product line, as go-sev-guest embeds them.
func EmbeddedRoots() (map[string][]*trust.AMDRootCerts, error) {
	out := map[string][]*trust.AMDRootCerts{}
	for pl, vlek := range map[string][]byte{"Milan": trust.AskArkMilanVlekBytes, "Genoa": trust.AskArkGenoaVlekBytes, "Turin": trust.AskArkTurinVlekBytes} {
		r, err := trust.GetDefaultRootCerts(pl)
		if err != nil {
			return nil, err
		}
		out[pl] = []*trust.AMDRootCerts{r}
		// A VLEK bundle go-sev-guest cannot read leaves that product's
		// VLEK reports unverifiable, not its VCEK reports.
		if v := trust.AMDRootCertsProduct(pl); v.FromKDSCertBytes(vlek) == nil {
			out[pl] = append(out[pl], v)
		}
	}
	return out, nil
}

// RootsFromKDS reads an ASK (or ASVK) and ARK in PEM, as AMD's key
// distribution service publishes them (.../vcek/v1/PRODUCT/cert_chain);
// the product line is the ARK's ("ARK-Milan").
func RootsFromKDS(pemData []byte) (map[string][]*trust.AMDRootCerts, string, error) {
	r := &trust.AMDRootCerts{}
	if err := r.FromKDSCertBytes(pemData); err != nil {
		return nil, "", fmt.Errorf("not an AMD certificate chain (the ASK and ARK in PEM, as https://kdsintf.amd.com/vcek/v1/Milan/cert_chain serves them): %v", err)
	}
	pc := r.ProductCerts
	if pc == nil || pc.Ark == nil || (pc.Ask == nil && pc.Asvk == nil) {
		return nil, "", fmt.Errorf("the ASK (or ASVK) and the ARK must both be there, ASK first, in PEM")
	}
	pl, ok := strings.CutPrefix(pc.Ark.Subject.CommonName, "ARK-")
	if !ok || pl == "" {
		return nil, "", fmt.Errorf("the second certificate is %q, not an AMD root key (ARK-<product line>)", pc.Ark.Subject.CommonName)
	}
	r.ProductLine, r.Product = pl, pl
	return map[string][]*trust.AMDRootCerts{pl: {r}}, pl, nil
}

func policyChecks(rep *spb.Report, p Policy, add func(name, status, format string, a ...any)) {
	field := func(name, what string, got, want []byte) {
		if want == nil {
			return
		}
		if !bytes.Equal(got, want) {
			add(name, "fail", "%s is %s, not %s", what, hex.EncodeToString(got), hex.EncodeToString(want))
		} else {
			add(name, "pass", "%s %s", what, hex.EncodeToString(got))
		}
	}
	field("measurement", "MEASUREMENT", rep.GetMeasurement(), p.Measurement)
	if p.MinTCB != nil {
		got, min := rep.GetReportedTcb(), *p.MinTCB
		var low []string
		for i := 0; i < 8; i++ {
			g, m := byte(got>>(8*i)), byte(min>>(8*i))
			if g < m {
				low = append(low, fmt.Sprintf("byte %d is %d < %d", i, g, m))
			}
		}
		if len(low) > 0 {
			add("tcb", "fail", "REPORTED_TCB 0x%016x is below the minimum 0x%016x (%s)", got, min, strings.Join(low, ", "))
		} else {
			add("tcb", "pass", "REPORTED_TCB 0x%016x is at least 0x%016x in every component", got, min)
		}
	}
	if p.GuestPolicy != nil {
		if got := rep.GetPolicy(); got != *p.GuestPolicy {
			add("policy", "fail", "POLICY is 0x%x, not 0x%x (differing bits 0x%x)", got, *p.GuestPolicy, got^*p.GuestPolicy)
		} else {
			add("policy", "pass", "POLICY 0x%x", got)
		}
	}
	field("chip-id", "CHIP_ID", rep.GetChipId(), p.ChipID)
	field("report-id", "REPORT_ID", rep.GetReportId(), p.ReportID)
}
