package attest_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/verify/testdata"
	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/attest"
	"github.com/vtpm-mfg/vtpm-mfg/internal/attest/attesttest"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

// The GUIDs as the SVSM reads them from guest memory (attestation.md).
func TestGUIDBytes(t *testing.T) {
	for g, want := range map[string]string{
		attest.VTPMGUID.String():     "ebf176c42301a5459641b4e7dde5bfe3",
		attest.ServicesGUID.String(): "bb9e8463923d7046a1ff58f9c94b87bb",
	} {
		var got string
		switch g {
		case attest.VTPMGUID.String():
			got = hex.EncodeToString(attest.GUIDBytes(attest.VTPMGUID))
		default:
			got = hex.EncodeToString(attest.GUIDBytes(attest.ServicesGUID))
		}
		if got != want {
			t.Errorf("%s: %s, want %s", g, got, want)
		}
	}
}

// The manifest is, for every svsm-2026 vector, the TPMT_PUBLIC the real
// TPM returned for the L-1 template (its TPM2B_PUBLIC without the size),
// both derived from the seed and rebuilt from the public key alone.
func TestManifestMatchesRealTPM(t *testing.T) {
	var v struct {
		Vectors []struct {
			ID      string `json:"id"`
			Size    int    `json:"eps_tpm2b_size"`
			Buf     string `json:"eps_buffer_64"`
			Targets map[string]struct {
				RSA struct {
					TPM2B string `json:"tpm2b_public"`
				} `json:"rsa"`
			} `json:"targets"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(sharedvec.Read(t, "tpm/ek-vectors.json"), &v); err != nil {
		t.Fatal(err)
	}
	mode, err := ek.ModeByName(nv.SVSM2026.RSACandidate)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, vec := range v.Vectors {
		tv, ok := vec.Targets["upstream"]
		if !ok || tv.RSA.TPM2B == "" {
			continue
		}
		want, _ := hex.DecodeString(tv.RSA.TPM2B)
		if int(binary.BigEndian.Uint16(want)) != len(want)-2 || len(want) != 316 {
			t.Fatalf("%s: vector is not a 316-byte TPM2B_PUBLIC", vec.ID)
		}
		eps, _ := hex.DecodeString(vec.Buf)
		k, err := ek.Derive(eps[:vec.Size], ek.RSA2048, mode, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := attest.VTPMManifest(k.Public)
		if !bytes.Equal(got, want[2:]) {
			t.Errorf("%s: manifest\n got %x\nwant %x", vec.ID, got, want[2:])
		}
		pub, _ := k.CryptoPublic()
		fromKey, err := attest.ManifestForRSAKey(pub.(*rsa.PublicKey))
		if err != nil || !bytes.Equal(fromKey, want[2:]) {
			t.Errorf("%s: manifest from the public key differs: %v", vec.ID, err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no svsm-2026 RSA vectors")
	}
}

func TestManifestForRSAKeyRefusesOtherKeys(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := attest.ManifestForRSAKey(&k.PublicKey); err == nil || !strings.Contains(err.Error(), "RSA-1024") {
		t.Errorf("RSA-1024: %v", err)
	}
	k, _ = rsa.GenerateKey(rand.Reader, 2048)
	e3 := rsa.PublicKey{N: k.N, E: 3}
	if _, err := attest.ManifestForRSAKey(&e3); err == nil || !strings.Contains(err.Error(), "exponent 3") {
		t.Errorf("exponent 3: %v", err)
	}
}

func manifestOf(t *testing.T) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	m, err := attest.ManifestForRSAKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestServicesTable(t *testing.T) {
	vtpm := manifestOf(t)
	uefi := []byte("uefi mm manifest")
	only := attest.BuildServices([]attest.Service{{GUID: attest.VTPMGUID, Data: vtpm}})
	if len(only) != 362 {
		t.Errorf("vTPM-only table is %d bytes, the SVSM's is 362", len(only))
	}
	tab := attest.BuildServices([]attest.Service{{GUID: attest.VTPMGUID, Data: vtpm}, {GUID: attest.UEFIMMGUID, Data: uefi}})
	// Header and entries at their offsets.
	if !bytes.Equal(tab[0:16], attest.GUIDBytes(attest.ServicesGUID)) || binary.LittleEndian.Uint32(tab[16:]) != uint32(len(tab)) || binary.LittleEndian.Uint32(tab[20:]) != 2 {
		t.Fatalf("header %x", tab[:24])
	}
	if off := binary.LittleEndian.Uint32(tab[24+16:]); off != 72 || binary.LittleEndian.Uint32(tab[24+20:]) != 314 {
		t.Errorf("vTPM entry %x", tab[24:48])
	}
	svcs, err := attest.ParseServices(tab)
	if err != nil || len(svcs) != 2 || svcs[0].GUID != attest.VTPMGUID || !bytes.Equal(svcs[0].Data, vtpm) || svcs[1].GUID != attest.UEFIMMGUID || !bytes.Equal(svcs[1].Data, uefi) {
		t.Fatalf("%v %v", svcs, err)
	}
	bad := append([]byte(nil), tab...)
	binary.LittleEndian.PutUint32(bad[16:], uint32(len(tab)+1))
	if _, err := attest.ParseServices(bad); err == nil {
		t.Error("wrong total length accepted")
	}
	bad = append([]byte(nil), tab...)
	binary.LittleEndian.PutUint32(bad[24+20:], 1000)
	if _, err := attest.ParseServices(bad); err == nil {
		t.Error("entry past the end accepted")
	}
	if _, err := attest.ParseServices(tab[:30]); err == nil {
		t.Error("truncated table accepted")
	}
}

// fixture is a signed report over a nonce and manifest.
type fixture struct {
	signer *attesttest.Signer
	opts   attest.Options
	nonce  []byte
	vtpm   []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	s, err := attesttest.New("Milan-B0")
	if err != nil {
		t.Fatal(err)
	}
	roots, pl, err := attest.RootsFromKDS(s.RootsPEM())
	if err != nil || pl != "Milan" {
		t.Fatalf("%v %q", err, pl)
	}
	f := &fixture{signer: s, nonce: make([]byte, 64), vtpm: manifestOf(t)}
	rand.Read(f.nonce)
	f.opts = attest.Options{Roots: roots, Expect: []attest.Expected{{Name: "vm-1", SHA512: attest.Digest(f.vtpm)}}}
	return f
}

func (f *fixture) evidence(t *testing.T, manifest []byte, r attesttest.Report) attest.Evidence {
	t.Helper()
	if r.ReportData == ([64]byte{}) {
		// Computed here, independently of ReportData.
		r.ReportData = sha512.Sum512(append(append([]byte(nil), f.nonce...), manifest...))
	}
	raw, err := f.signer.Sign(r)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := f.signer.CertTable()
	if err != nil {
		t.Fatal(err)
	}
	return attest.Evidence{Report: raw, Nonce: f.nonce, Manifest: manifest, CertTable: ct}
}

func failed(r *attest.Result) string {
	var n []string
	for _, c := range r.Failed() {
		n = append(n, c.Name)
	}
	sort.Strings(n)
	return strings.Join(n, ",")
}

func TestVerifyTestChain(t *testing.T) {
	f := newFixture(t)
	other := manifestOf(t)
	meas := bytes.Repeat([]byte{0xa5}, 48)
	uefi := []byte("uefi")
	table := attest.BuildServices([]attest.Service{{GUID: attest.VTPMGUID, Data: f.vtpm}, {GUID: attest.UEFIMMGUID, Data: uefi}})
	noVTPM := attest.BuildServices([]attest.Service{{GUID: attest.UEFIMMGUID, Data: uefi}})
	sized := append([]byte{0x01, 0x3a}, f.vtpm...)
	for _, c := range []struct {
		name   string
		ev     func() attest.Evidence
		policy attest.Policy
		fail   string // sorted failed checks
	}{
		{"accepted", func() attest.Evidence { return f.evidence(t, f.vtpm, attesttest.Report{Measurement: meas}) }, attest.Policy{Measurement: meas}, ""},
		{"services table", func() attest.Evidence { return f.evidence(t, table, attesttest.Report{}) }, attest.Policy{}, ""},
		{"services table without vTPM", func() attest.Evidence { return f.evidence(t, noVTPM, attesttest.Report{}) }, attest.Policy{}, "manifest"},
		{"VCEK from a file", func() attest.Evidence {
			ev := f.evidence(t, f.vtpm, attesttest.Report{})
			ev.CertTable, ev.VCEK = nil, f.signer.VCEK()
			return ev
		}, attest.Policy{}, ""},
		{"no VCEK", func() attest.Evidence {
			ev := f.evidence(t, f.vtpm, attesttest.Report{})
			ev.CertTable = nil
			return ev
		}, attest.Policy{}, "signature"},
		{"flipped report byte", func() attest.Evidence {
			ev := f.evidence(t, f.vtpm, attesttest.Report{})
			ev.Report[0x90] ^= 1 // MEASUREMENT
			return ev
		}, attest.Policy{}, "signature"},
		{"another nonce", func() attest.Evidence {
			ev := f.evidence(t, f.vtpm, attesttest.Report{})
			ev.Nonce = bytes.Repeat([]byte{7}, 64)
			return ev
		}, attest.Policy{}, "report-data"},
		{"another TPM's manifest", func() attest.Evidence { return f.evidence(t, other, attesttest.Report{}) }, attest.Policy{}, "manifest"},
		{"manifest with its TPM2B size", func() attest.Evidence { return f.evidence(t, sized, attesttest.Report{}) }, attest.Policy{}, "manifest"},
		{"manifest swapped after signing", func() attest.Evidence {
			ev := f.evidence(t, other, attesttest.Report{})
			ev.Manifest = f.vtpm
			return ev
		}, attest.Policy{}, "report-data"},
		{"VMPL 1", func() attest.Evidence { return f.evidence(t, f.vtpm, attesttest.Report{VMPL: 1}) }, attest.Policy{}, "vmpl"},
		{"debug policy", func() attest.Evidence { return f.evidence(t, f.vtpm, attesttest.Report{Policy: 0x30000 | 1<<19}) }, attest.Policy{}, "debug"},
		{"measurement mismatch", func() attest.Evidence { return f.evidence(t, f.vtpm, attesttest.Report{Measurement: meas}) }, attest.Policy{Measurement: bytes.Repeat([]byte{1}, 48)}, "measurement"},
		{"truncated report", func() attest.Evidence {
			ev := f.evidence(t, f.vtpm, attesttest.Report{})
			ev.Report = ev.Report[:1000]
			return ev
		}, attest.Policy{}, "report"},
		{"short nonce", func() attest.Evidence {
			ev := f.evidence(t, f.vtpm, attesttest.Report{})
			ev.Nonce = ev.Nonce[:32]
			return ev
		}, attest.Policy{}, "nonce,report-data"},
		{"policy and TCB", func() attest.Evidence {
			return f.evidence(t, f.vtpm, attesttest.Report{ReportedTCB: 0x4405000000000002})
		}, attest.Policy{GuestPolicy: ptr(uint64(0x30000)), MinTCB: ptr(uint64(0x4405000000000002))}, ""},
		{"TCB too low and another policy", func() attest.Evidence {
			return f.evidence(t, f.vtpm, attesttest.Report{ReportedTCB: 0x4405000000000002})
		}, attest.Policy{GuestPolicy: ptr(uint64(0x31000)), MinTCB: ptr(uint64(0x4406000000000002))}, "policy,tcb"},
		{"version 3 with CPUID", func() attest.Evidence {
			return f.evidence(t, f.vtpm, attesttest.Report{Version: 3, FMS: 0x00a00f11})
		}, attest.Policy{}, ""},
		{"version 3 without a VCEK", func() attest.Evidence {
			ev := f.evidence(t, f.vtpm, attesttest.Report{Version: 3, FMS: 0x00a00f11})
			ev.CertTable = nil
			return ev
		}, attest.Policy{}, "signature"},
		{"version 1", func() attest.Evidence { return f.evidence(t, f.vtpm, attesttest.Report{Version: 1}) }, attest.Policy{}, "signature,version"},
		{"VLEK with the ASK's roots", func() attest.Evidence { return f.evidence(t, f.vtpm, attesttest.Report{VLEK: true}) }, attest.Policy{}, "signature"},
		{"report ID", func() attest.Evidence {
			return f.evidence(t, f.vtpm, attesttest.Report{ReportID: bytes.Repeat([]byte{3}, 32)})
		}, attest.Policy{ReportID: bytes.Repeat([]byte{4}, 32)}, "report-id"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := f.opts
			o.Policy = c.policy
			r := attest.Verify(c.ev(), o)
			if got := failed(r); got != c.fail || r.Accepted != (c.fail == "") {
				t.Errorf("failed checks %q (accepted %v), want %q: %+v", got, r.Accepted, c.fail, r.Checks)
			}
			if c.fail == "" && r.VTPM != "vm-1" {
				t.Errorf("matched %q", r.VTPM)
			}
		})
	}
	// A VLEK-signed report verifies with the ASVK's roots.
	vroots, _, err := attest.RootsFromKDS(f.signer.VLEKRootsPEM())
	if err != nil {
		t.Fatal(err)
	}
	vo := f.opts
	vo.Roots = vroots
	if r := attest.Verify(f.evidence(t, f.vtpm, attesttest.Report{VLEK: true}), vo); !r.Accepted || r.Signer != "VLEK" {
		t.Errorf("VLEK: %+v", r.Checks)
	}
	// Without a VCEK the message points at AMD's key distribution service.
	ev := f.evidence(t, f.vtpm, attesttest.Report{Version: 3, FMS: 0x00a00f11})
	ev.CertTable = nil
	if fc := attest.Verify(ev, f.opts).Failed(); len(fc) != 1 || !strings.Contains(fc[0].Detail, "https://kdsintf.amd.com/vcek/v1/Milan/") {
		t.Errorf("%+v", fc)
	}
	// The size-prefixed manifest is named as such.
	r := attest.Verify(f.evidence(t, sized, attesttest.Report{}), f.opts)
	if fc := r.Failed(); len(fc) != 1 || !strings.Contains(fc[0].Detail, "TPM2B size") {
		t.Errorf("%+v", fc)
	}
	// The test chain is not AMD's.
	o := f.opts
	o.Roots = nil
	r = attest.Verify(f.evidence(t, f.vtpm, attesttest.Report{}), o)
	if failed(r) != "signature" {
		t.Errorf("test chain accepted by the embedded roots: %+v", r.Checks)
	}
}

func ptr[T any](v T) *T { return &v }

// go-sev-guest's real Milan report verifies against the embedded AMD
// roots; it is refused because its REPORT_DATA (01 02 03 04 05 00 ...)
// binds no manifest (and because its guest policy 0xb0000 allows
// debugging).
func TestRealMilanReport(t *testing.T) {
	vtpm := manifestOf(t)
	nonce := make([]byte, 64)
	ev := attest.Evidence{Report: testdata.AttestationBytes, Nonce: nonce, Manifest: vtpm, VCEK: testdata.VcekBytes}
	o := attest.Options{Now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Expect: []attest.Expected{{Name: "x", SHA512: attest.Digest(vtpm)}}}
	r := attest.Verify(ev, o)
	if got := failed(r); got != "debug,report-data" {
		t.Fatalf("failed %q, want debug and report-data only: %+v", got, r.Checks)
	}
	if r.Signer != "VCEK" || r.ProductLine != "Milan" {
		t.Errorf("signer %q %q", r.Signer, r.ProductLine)
	}
	// Tampering breaks its signature.
	tampered := append([]byte(nil), testdata.AttestationBytes...)
	tampered[0x90] ^= 0x80
	ev.Report = tampered
	if got := failed(attest.Verify(ev, o)); got != "debug,report-data,signature" {
		t.Errorf("tampered Milan report: failed %q", got)
	}
}

// A report that is no TPMT_PUBLIC is described as such.
func TestMismatchDescriptions(t *testing.T) {
	f := newFixture(t)
	r := attest.Verify(f.evidence(t, []byte("not a public area"), attesttest.Report{}), f.opts)
	if fc := r.Failed(); len(fc) != 1 || !strings.Contains(fc[0].Detail, "not a TPMT_PUBLIC") {
		t.Errorf("%+v", fc)
	}
	other := manifestOf(t)
	r = attest.Verify(f.evidence(t, other, attesttest.Report{}), f.opts)
	pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](other)
	if fc := r.Failed(); len(fc) != 1 || !strings.Contains(fc[0].Detail, "another TPM") || pub == nil {
		t.Errorf("%+v", fc)
	}
}
