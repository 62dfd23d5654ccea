package pipeline

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"sort"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// Report describes an NV image for an operator. Secrets appear only as
// fingerprints.
type Report struct {
	Profile      string            `json:"profile"`
	Firmware     string            `json:"firmware_version"`
	Secrets      map[string]string `json:"secret_fingerprints"`
	Counters     map[string]uint64 `json:"counters"`
	Lockout      map[string]uint32 `json:"dictionary_attack"`
	PCRBanks     []string          `json:"pcr_banks"`
	OrderlyState string            `json:"orderly_state"`
	Indices      []IndexReport     `json:"nv_indices"`
	Objects      []ObjectReport    `json:"persistent_objects"`
	FreeBytes    int               `json:"nv_free_bytes"`
	EKs          []EKReport        `json:"endorsement_keys"`
	// AttestationManifestSHA512: see Manifest.
	AttestationManifestSHA512 string          `json:"attestation_manifest_sha512,omitempty"`
	DevIDs                    []DevIDReport   `json:"device_identity_keys,omitempty"`
	Platform                  *PlatformReport `json:"platform_certificate,omitempty"`
}

// ObjectReport is one persistent object.
type ObjectReport struct {
	Handle    string `json:"handle"`
	Type      string `json:"type"`
	Hierarchy string `json:"hierarchy"`
	Name      string `json:"name,omitempty"`
	KeySHA256 string `json:"public_key_fingerprint,omitempty"`
	Role      string `json:"role,omitempty"`
	Error     string `json:"error,omitempty"`
}

func objectReport(e nv.Entry) ObjectReport {
	or := ObjectReport{Handle: fmt.Sprintf("0x%08x", e.Handle), Role: persistentRole(e.Handle)}
	pub, hier, err := nv.ObjectPublic(e)
	if err != nil {
		or.Error = err.Error()
		return or
	}
	or.Hierarchy = map[uint32]string{nv.RHEndorsement: "endorsement", nv.RHOwner: "owner", 0x4000000C: "platform"}[hier]
	if or.Hierarchy == "" {
		or.Hierarchy = fmt.Sprintf("0x%08x", hier)
	}
	or.Type = keyType(pub)
	if n, err := ek.ObjectName(pub); err == nil {
		or.Name = hex.EncodeToString(n)
	}
	if k, err := tpm2.Pub(pub); err == nil {
		or.KeySHA256 = KeyFingerprint(k)
	}
	return or
}

func persistentRole(h uint32) string {
	if h == SRKHandle {
		return "storage root key (SRK)"
	}
	if h == IAKHandle || h == IDevIDHandle {
		return map[uint32]string{IAKHandle: "IAK", IDevIDHandle: "IDevID"}[h]
	}
	for alg, eh := range ekHandles {
		if eh == h {
			return string(alg) + " EK"
		}
	}
	return ""
}

func keyType(pub tpm2.TPMTPublic) string {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		if r, err := pub.Parameters.RSADetail(); err == nil {
			return fmt.Sprintf("RSA-%d", r.KeyBits)
		}
	case tpm2.TPMAlgECC:
		if e, err := pub.Parameters.ECCDetail(); err == nil {
			return map[tpm2.TPMECCCurve]string{tpm2.TPMECCNistP256: "ECC NIST P-256", tpm2.TPMECCNistP384: "ECC NIST P-384", tpm2.TPMECCNistP521: "ECC NIST P-521"}[e.CurveID]
		}
	}
	return fmt.Sprintf("type 0x%04x", uint16(pub.Type))
}

// IndexReport is one NV index.
type IndexReport struct {
	Handle     string      `json:"handle"`
	Attributes string      `json:"attributes"`
	AttrNames  string      `json:"attribute_names"`
	NameAlg    string      `json:"name_alg"`
	Size       int         `json:"size"`
	Role       string      `json:"role,omitempty"`
	Cert       *CertReport `json:"certificate,omitempty"`
}

// CertReport summarizes a certificate.
type CertReport struct {
	Subject   string `json:"subject"`
	Issuer    string `json:"issuer"`
	Serial    string `json:"serial"`
	NotBefore string `json:"not_before"`
	NotAfter  string `json:"not_after"`
	Key       string `json:"public_key"`
	KeySHA256 string `json:"public_key_fingerprint"`
	Error     string `json:"error,omitempty"`
}

// EKReport is one derived EK.
type EKReport struct {
	Alg       string `json:"alg"`
	Name      string `json:"name"`
	KeySHA256 string `json:"public_key_fingerprint"`
	CertIndex string `json:"certificate_index"`
	Certified *bool  `json:"certificate_matches,omitempty"`
}

func roleOf(h uint32) string {
	for _, t := range ek.EKTypes {
		if t.Index == h {
			return string(t.Alg) + " EK certificate"
		}
	}
	if h >= ChainIndexFirst && h <= ChainIndexLast {
		return "EK certificate chain"
	}
	if h == IAKCertIndex || h == IDevIDCertIndex || h == PlatformCertIndex {
		return map[uint32]string{IAKCertIndex: "IAK certificate", IDevIDCertIndex: "IDevID certificate", PlatformCertIndex: "platform certificate"}[h]
	}
	return ""
}

func certReport(der []byte) *CertReport {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return &CertReport{Error: "not a certificate: " + err.Error()}
	}
	r := &CertReport{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: c.SerialNumber.Text(16),
		NotBefore: c.NotBefore.UTC().Format(time.RFC3339), NotAfter: c.NotAfter.UTC().Format(time.RFC3339),
		Key: keyDesc(c), KeySHA256: KeyFingerprint(c.PublicKey),
	}
	if r.Subject == "" {
		r.Subject = "(empty; identity in the subjectAltName)"
	}
	return r
}

func keyDesc(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}

var algNames = map[uint16]string{0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512", 0x0010: "null"}

func algName(a uint16) string {
	if n, ok := algNames[a]; ok {
		return n
	}
	return fmt.Sprintf("0x%04x", a)
}

func pcrBanks(b []byte) []string {
	n := int(binary.LittleEndian.Uint32(b))
	var out []string
	for i := 0; i < n && 4+6*i+6 <= len(b); i++ {
		s := b[4+6*i:]
		cnt := 0
		for _, x := range s[3:6] {
			cnt += bits.OnesCount8(x)
		}
		out = append(out, fmt.Sprintf("%s: %d PCRs", algName(binary.LittleEndian.Uint16(s)), cnt))
	}
	return out
}

// Describe builds the report, deriving the EKs.
func Describe(im *nv.Image) (*Report, error) {
	p := im.Profile
	r := &Report{
		Profile:  p.Name,
		Firmware: fmt.Sprintf("0x%08x.0x%08x", im.U32("firmwareV1"), im.U32("firmwareV2")),
		Secrets:  map[string]string{},
		Counters: map[string]uint64{
			"totalResetCount": im.U64("totalResetCount"),
			"resetCount":      uint64(im.U32("resetCount")),
			"auditCounter":    im.U64("auditCounter"),
			"clock":           im.U64("clock"),
		},
		Lockout: map[string]uint32{
			"failedTries": im.U32("failedTries"), "maxTries": im.U32("maxTries"),
			"recoveryTime": im.U32("recoveryTime"), "lockoutRecovery": im.U32("lockoutRecovery"),
		},
		PCRBanks:  pcrBanks(im.Field("pcrAllocated")),
		FreeBytes: im.FreeBytes(),
	}
	switch os := im.U16("orderlyState"); os {
	case 0x0000:
		r.OrderlyState = "TPM_SU_CLEAR (orderly)"
	case 0x0001:
		r.OrderlyState = "TPM_SU_STATE (orderly, saved state)"
	case 0xFFFF:
		r.OrderlyState = "none (not orderly: the next start is a TPM reset with DA penalty)"
	default:
		r.OrderlyState = fmt.Sprintf("0x%04x", os)
	}
	for _, f := range []string{"EPSeed", "SPSeed", "PPSeed", "phProof", "shProof", "ehProof"} {
		r.Secrets[f] = nv.Fingerprint(im.TPM2B(f))
	}
	for _, e := range im.Entries {
		if e.Index == nil {
			r.Objects = append(r.Objects, objectReport(e))
			continue
		}
		ix := e.Index
		ir := IndexReport{
			Handle: fmt.Sprintf("0x%08x", ix.Handle), Attributes: fmt.Sprintf("0x%08x", ix.Attributes),
			AttrNames: nv.AttrString(ix.Attributes), NameAlg: algName(ix.NameAlg), Size: int(ix.DataSize),
			Role: roleOf(ix.Handle),
		}
		if ir.Role != "" && ix.Data != nil && ix.Handle != PlatformCertIndex {
			ir.Cert = certReport(ix.Data)
		}
		r.Indices = append(r.Indices, ir)
	}
	var l1 *ek.Key
	sort.Slice(r.Indices, func(i, j int) bool { return r.Indices[i].Handle < r.Indices[j].Handle })
	for _, t := range ek.EKTypes {
		alg := t.Alg
		// The low-range EKs always; the others where a certificate is.
		if (alg != ek.RSA2048 && alg != ek.ECCP256) && im.LookupIndex(t.Index) == nil {
			continue
		}
		if CheckEK(im.Profile, alg) != nil {
			continue
		}
		k, pub, err := DerivePublic(im, alg)
		if err != nil {
			return nil, err
		}
		er := EKReport{Alg: string(alg), Name: hex.EncodeToString(k.Name), KeySHA256: KeyFingerprint(pub), CertIndex: fmt.Sprintf("0x%08x", CertIndex(alg))}
		if ix := im.LookupIndex(CertIndex(alg)); ix != nil {
			m := false
			if c, err := x509.ParseCertificate(ix.Data); err == nil {
				m = KeyFingerprint(c.PublicKey) == er.KeySHA256
			}
			er.Certified = &m
		}
		r.EKs = append(r.EKs, er)
		if alg == ek.RSA2048 {
			l1 = k
		}
	}
	var err error
	if r.AttestationManifestSHA512, err = attestDigest(im, l1); err != nil {
		return nil, err
	}
	r.DevIDs = describeDevIDs(im)
	r.Platform = describePlatform(im)
	return r, nil
}

// Text renders the report for people.
func (r *Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "TPM profile:        %s\n", r.Profile)
	fmt.Fprintf(&b, "firmware version:   %s\n", r.Firmware)
	fmt.Fprintf(&b, "orderly state:      %s\n", r.OrderlyState)
	fmt.Fprintf(&b, "reset counters:     total %d, since clear %d\n", r.Counters["totalResetCount"], r.Counters["resetCount"])
	fmt.Fprintf(&b, "dictionary attack:  %d of %d failed tries, recovery %ds, lockout recovery %ds\n", r.Lockout["failedTries"], r.Lockout["maxTries"], r.Lockout["recoveryTime"], r.Lockout["lockoutRecovery"])
	fmt.Fprintf(&b, "PCR banks:          %s\n", strings.Join(r.PCRBanks, ", "))
	b.WriteString("seeds and proofs (fingerprints only):\n")
	for _, k := range []string{"EPSeed", "SPSeed", "PPSeed", "phProof", "shProof", "ehProof"} {
		fmt.Fprintf(&b, "  %-8s %s\n", k, r.Secrets[k])
	}
	fmt.Fprintf(&b, "NV indices:         %d\n", len(r.Indices))
	for _, ix := range r.Indices {
		fmt.Fprintf(&b, "  %s  %s (%s)  %s  %d bytes", ix.Handle, ix.Attributes, ix.AttrNames, ix.NameAlg, ix.Size)
		if ix.Role != "" {
			fmt.Fprintf(&b, "  [%s]", ix.Role)
		}
		b.WriteString("\n")
		if c := ix.Cert; c != nil {
			if c.Error != "" {
				fmt.Fprintf(&b, "      %s\n", c.Error)
				continue
			}
			fmt.Fprintf(&b, "      subject:  %s\n      issuer:   %s\n      serial:   %s\n      validity: %s to %s\n      key:      %s %s\n",
				c.Subject, c.Issuer, c.Serial, c.NotBefore, c.NotAfter, c.Key, c.KeySHA256)
		}
	}
	fmt.Fprintf(&b, "persistent objects: %d\n", len(r.Objects))
	for _, o := range r.Objects {
		if o.Error != "" {
			fmt.Fprintf(&b, "  %s  %s\n", o.Handle, o.Error)
			continue
		}
		fmt.Fprintf(&b, "  %s  %-15s %-11s %s  name %s", o.Handle, o.Type, o.Hierarchy, o.KeySHA256, o.Name)
		if o.Role != "" {
			fmt.Fprintf(&b, "  [%s]", o.Role)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "NV free:            %d bytes\n", r.FreeBytes)
	b.WriteString("endorsement keys (derived from the EPS):\n")
	for _, e := range r.EKs {
		cert := "no certificate"
		if e.Certified != nil {
			cert = "certificate does NOT match"
			if *e.Certified {
				cert = "certified"
			}
		}
		fmt.Fprintf(&b, "  %-9s %s  name %s  (%s at %s)\n", e.Alg, e.KeySHA256, e.Name, cert, e.CertIndex)
	}
	if r.AttestationManifestSHA512 != "" {
		fmt.Fprintf(&b, "attestation:        vTPM manifest (L-1 EK TPMT_PUBLIC) SHA-512 %s\n", r.AttestationManifestSHA512)
	}
	devIDText(&b, r.DevIDs)
	platformText(&b, r.Platform)
	return b.String()
}

// VerifyOptions are the inputs of an offline check.
type VerifyOptions struct {
	CA            []*x509.Certificate // trust anchors
	Intermediates []*x509.Certificate
	Algs          []ek.Alg
	Now           time.Time
	// DevID are device identity keys that must be present (and the
	// device serial their certificates must name, if set); those present
	// are checked in any case.
	DevID DevIDSpec
}

// Verify runs every check an operator needs before deploying an image and
// returns one line per finding (none: the image is good).
func Verify(im *nv.Image, o VerifyOptions) []string {
	var f []string
	info := TPMInfo(im.Profile)
	inter := append([]*x509.Certificate(nil), o.Intermediates...)
	for _, e := range im.Entries {
		if e.Index != nil && e.Handle >= ChainIndexFirst && e.Handle <= ChainIndexLast {
			if c, err := x509.ParseCertificate(e.Index.Data); err == nil {
				inter = append(inter, c)
			} else {
				f = append(f, fmt.Sprintf("NV index 0x%08x (EK certificate chain): not a certificate: %v", e.Handle, err))
			}
		}
	}
	// Each EK is derived once, for its certificate and its persisted copy.
	derived := map[ek.Alg]*ek.Key{}
	derive := func(alg ek.Alg) (*ek.Key, error) {
		if k, ok := derived[alg]; ok {
			return k, nil
		}
		k, err := DeriveEK(im, alg)
		if err == nil {
			derived[alg] = k
		}
		return k, err
	}
	f = append(f, verifyPersistent(im, derive)...)
	f = append(f, verifyDevIDs(im, o, inter)...)
	f = append(f, verifyPlatform(im, o, inter)...)
	for _, alg := range o.Algs {
		h := CertIndex(alg)
		ix := im.LookupIndex(h)
		if ix == nil {
			f = append(f, fmt.Sprintf("%s: no EK certificate at NV index 0x%08x", alg, h))
			continue
		}
		want := nv.AttrEKCert | nv.AttrWritten
		if ix.Attributes&^nv.AttrWriteLocked != want {
			f = append(f, fmt.Sprintf("%s: NV index 0x%08x has attributes 0x%08x (%s), a manufacturer sets 0x%08x (+ writelocked)", alg, h, ix.Attributes, nv.AttrString(ix.Attributes), want))
		}
		if ix.NameAlg != 0x000B || len(ix.AuthValue) != 0 || len(ix.AuthPolicy) != 0 {
			f = append(f, fmt.Sprintf("%s: NV index 0x%08x must have nameAlg sha256, empty authValue and authPolicy", alg, h))
		}
		var pub crypto.PublicKey
		k, err := derive(alg)
		if err == nil {
			pub, err = k.CryptoPublic()
		}
		if err != nil {
			f = append(f, fmt.Sprintf("%s: cannot derive the EK: %v", alg, err))
			continue
		}
		res, err := ekcert.Check(ix.Data, ekcert.CheckOptions{Roots: o.CA, Intermediates: inter, Want: pub, TPM: &info, Now: o.Now})
		if err != nil {
			f = append(f, fmt.Sprintf("%s: NV index 0x%08x: %v", alg, h, err))
			continue
		}
		f = append(f, certFindings(string(alg), "EK ", res.Problems, res.KeyMismatch, res.Cert, pub, res.ChainError)...)
	}
	return f
}

// certFindings are verify's lines for a checked certificate of key name:
// profile problems, a key other than the derived one (pub; what names its
// kind in the message), a broken chain.
func certFindings(name, what string, problems []string, mismatch bool, cert *x509.Certificate, pub crypto.PublicKey, chainErr error) []string {
	var f []string
	for _, p := range problems {
		f = append(f, fmt.Sprintf("%s: certificate: %s", name, p))
	}
	if mismatch {
		f = append(f, fmt.Sprintf("%s: certificate certifies %s, but this TPM derives %s%s", name, KeyFingerprint(cert.PublicKey), what, KeyFingerprint(pub)))
	}
	if chainErr != nil {
		f = append(f, fmt.Sprintf("%s: certificate does not chain to the CA: %v", name, chainErr))
	}
	return f
}

// verifyPersistent checks that each persisted EK and SRK is exactly the
// key this TPM derives for its handle.
func verifyPersistent(im *nv.Image, deriveEK func(ek.Alg) (*ek.Key, error)) []string {
	var f []string
	for _, e := range im.Entries {
		if e.Index != nil {
			continue
		}
		pub, _, err := nv.ObjectPublic(e)
		if err != nil {
			f = append(f, err.Error())
			continue
		}
		var want *ek.Key
		what := ""
		if e.Handle == SRKHandle {
			what = "SRK"
			want, err = DeriveSRK(im)
		} else {
			for alg, h := range ekHandles {
				if h == e.Handle {
					what = string(alg) + " EK"
					want, err = deriveEK(alg)
				}
			}
		}
		if what == "" {
			continue
		}
		if err != nil {
			f = append(f, fmt.Sprintf("persistent %s at 0x%08x: %v", what, e.Handle, err))
			continue
		}
		if !bytes.Equal(tpm2.Marshal(pub), tpm2.Marshal(want.Public)) {
			f = append(f, fmt.Sprintf("persistent %s at 0x%08x is not the key this TPM derives for it", what, e.Handle))
		}
	}
	return f
}
