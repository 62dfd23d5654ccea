package pipeline

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// Offsets in a persistent object entry (handle, then the OBJECT of
// tpm/layout/*.txt): TPMT_PUBLIC at 4, its parameters at 60 (scheme
// selector at +6, hashAlg at +8), TPMT_SENSITIVE at 600, its seedValue
// (TPM2B_DIGEST) at +52.
const (
	entObject      = 4
	entParams      = entObject + 4 + 60
	entSchemeAlg   = entParams + 6
	entSchemeHash  = entParams + 8
	entSeedValue   = entObject + 600 + 52
	entSeedValueSz = 50
)

func manufactureDevID(t *testing.T, profile string, d DevIDSpec) (*nv.Image, []DevIDKey, *ekcert.CA) {
	t.Helper()
	p, _ := nv.Get(profile)
	ca := testCA(t, false)
	im, _, keys, err := ManufactureWithDevID(ManufactureOptions{Profile: p, Algs: []ek.Alg{ek.ECCP256}, CertOptions: CertOptions{CA: ca}, DevID: d})
	if err != nil {
		t.Fatal(err)
	}
	// What the TPM reads back: a fresh parse of the NVChip bytes.
	im2, err := nv.Parse(p, im.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return im2, keys.Keys, ca
}

// The persisted keys are the derived ones, stored as the TPM stores a
// signing key: signing scheme and hash in the parameters, seedValue
// cleared (CryptCreateObject keeps it only for restricted decryption
// keys); the certificates sit in their indices, write-locked.
func TestManufactureDevID(t *testing.T) {
	for _, c := range []struct {
		profile     string
		iak, idevid ek.Alg
	}{{"svsm-poc", ek.ECCP256, ek.RSA2048}, {"svsm-2026", ek.RSA2048, ek.ECCP384}} {
		im, keys, ca := manufactureDevID(t, c.profile, DevIDSpec{IAK: c.iak, IDevID: c.idevid, DeviceSerial: "vm-7"})
		if len(keys) != 2 || keys[0].Kind != ek.IAK || keys[1].Kind != ek.IDevID {
			t.Fatalf("keys %+v", keys)
		}
		for _, k := range keys {
			i := im.Find(k.Handle)
			if i < 0 {
				t.Fatalf("%s: nothing at 0x%08x", k.Kind, k.Handle)
			}
			e := im.Entries[i]
			pub, hier, err := nv.ObjectPublic(e)
			if err != nil {
				t.Fatal(err)
			}
			want, err := DeriveDevID(im, k.Kind, k.Alg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tpm2.Marshal(pub), tpm2.Marshal(want.Public)) || hier != nv.RHEndorsement {
				t.Errorf("%s: persisted %x (hierarchy %#x), derived %x", k.Kind, tpm2.Marshal(pub), hier, tpm2.Marshal(want.Public))
			}
			raw := e.Object // the entry's payload: handle, then the OBJECT
			scheme, hash := binary.LittleEndian.Uint16(raw[entSchemeAlg:]), binary.LittleEndian.Uint16(raw[entSchemeHash:])
			wantScheme, wantHash := uint16(tpm2.TPMAlgNull), uint16(0)
			switch {
			case k.Kind == ek.IAK && strings.HasPrefix(string(k.Alg), "rsa"):
				wantScheme, wantHash = uint16(tpm2.TPMAlgRSAPSS), uint16(want.Public.NameAlg)
			case strings.HasPrefix(string(k.Alg), "ecc"):
				wantScheme, wantHash = uint16(tpm2.TPMAlgECDSA), uint16(want.Public.NameAlg)
			}
			if scheme != wantScheme || hash != wantHash {
				t.Errorf("%s %s: stored scheme %#04x hash %#04x, want %#04x %#04x", k.Kind, k.Alg, scheme, hash, wantScheme, wantHash)
			}
			if sv := raw[entSeedValue : entSeedValue+entSeedValueSz]; !bytes.Equal(sv, make([]byte, entSeedValueSz)) {
				t.Errorf("%s: seedValue not cleared: %x", k.Kind, sv)
			}
			ix := im.LookupIndex(k.Index)
			if ix == nil || !bytes.Equal(ix.Data, k.Cert.Raw) || ix.Attributes != nv.AttrEKCert|nv.AttrWritten|nv.AttrWriteLocked {
				t.Errorf("%s: index 0x%08x %+v", k.Kind, k.Index, ix)
			}
		}
		if f := Verify(im, VerifyOptions{CA: roots(ca), Algs: []ek.Alg{ek.ECCP256}, DevID: DevIDSpec{IAK: c.iak, IDevID: c.idevid, DeviceSerial: "vm-7"}}); len(f) != 0 {
			t.Errorf("%s: findings %v", c.profile, f)
		}
		r, err := Describe(im)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.DevIDs) != 2 || !r.DevIDs[0].Matches || !r.DevIDs[1].Matches || r.DevIDs[0].DeviceSerial != "vm-7" || r.DevIDs[1].Alg != string(c.idevid) {
			t.Errorf("%s: describe %+v", c.profile, r.DevIDs)
		}
	}
}

// verify finds a swapped certificate, a foreign persisted key, a missing
// key and the wrong device serial.
func TestVerifyDevIDFindings(t *testing.T) {
	im, keys, ca := manufactureDevID(t, "svsm-2026", DevIDSpec{IAK: ek.ECCP256, IDevID: ek.ECCP256, DeviceSerial: "vm-1"})
	other, _, _ := manufactureDevID(t, "svsm-2026", DevIDSpec{IAK: ek.ECCP256, IDevID: ek.ECCP256, DeviceSerial: "vm-1"})
	// The IDevID index gets the IAK certificate; the IAK object is other's.
	if err := putIndex(im, IDevIDCertIndex, keys[0].Cert.Raw, false); err != nil {
		t.Fatal(err)
	}
	im.Entries[im.Find(IAKHandle)].Object = other.Entries[other.Find(IAKHandle)].Object
	f := strings.Join(Verify(im, VerifyOptions{CA: roots(ca), Algs: []ek.Alg{ek.ECCP256}, DevID: DevIDSpec{IAK: ek.ECCP256, IDevID: ek.RSA2048, DeviceSerial: "vm-2"}}), "\n")
	for _, w := range []string{
		"IAK: the persistent key at 0x81020001 is not the key this TPM derives",
		"IDevID: is ecc-p256, want rsa2048",
		"IDevID: certificate: certificatePolicies lack 2.23.133.11.1.2",
		"IDevID: certificate certifies",
		`IAK: certificate: subject serialNumber is "vm-1", want "vm-2"`,
	} {
		if !strings.Contains(f, w) {
			t.Errorf("no finding %q in:\n%s", w, f)
		}
	}
	// Nothing there, but required.
	plain, _, pca := manufactureDevID(t, "svsm-poc", DevIDSpec{})
	if f := Verify(plain, VerifyOptions{CA: roots(pca), Algs: []ek.Alg{ek.ECCP256}, DevID: DevIDSpec{IDevID: ek.ECCP256}}); len(f) != 1 || !strings.Contains(f[0], "IDevID: none") {
		t.Errorf("missing IDevID: %v", f)
	}
}

// Manufacture refuses device identity keys (ManufactureWithDevID makes
// them), and a device serial a certificate cannot hold is refused.
func TestDevIDRefusals(t *testing.T) {
	p, _ := nv.Get("svsm-poc")
	ca := testCA(t, false)
	if _, _, err := Manufacture(ManufactureOptions{Profile: p, CertOptions: CertOptions{CA: ca}, DevID: DevIDSpec{IAK: ek.ECCP256, DeviceSerial: "x"}}); err == nil {
		t.Error("Manufacture made device identity keys it does not report")
	}
	if _, _, _, err := ManufactureWithDevID(ManufactureOptions{Profile: p, CertOptions: CertOptions{CA: ca}, DevID: DevIDSpec{IAK: ek.ECCP256, DeviceSerial: "bad_serial"}}); err == nil {
		t.Error("device serial with '_' accepted")
	}
	q := *p
	q.Switches = map[string]bool{"ALG_SHA256": true}
	if err := CheckDevID(&q, ek.IDevID, ek.ECCP384); err == nil || !strings.Contains(err.Error(), "ALG_SHA384") {
		t.Errorf("build without SHA-384: %v", err)
	}
}

// The platform certificate is held by the RSA EK certificate in NV, signed
// by the CA, names the device serial, and verify notices a foreign one.
func TestPlatformCertificate(t *testing.T) {
	p, _ := nv.Get("svsm-2026")
	ca := testCA(t, true)
	opts := ManufactureOptions{Profile: p, Algs: ek.Algs, CertOptions: CertOptions{CA: ca},
		DevID: DevIDSpec{DeviceSerial: "vm-9", Platform: &PlatformInfo{Model: "m"}}}
	im, _, id, err := ManufactureWithDevID(opts)
	if err != nil {
		t.Fatal(err)
	}
	ix := im.LookupIndex(PlatformCertIndex)
	if ix == nil || !bytes.Equal(ix.Data, id.Platform) || ix.Attributes != nv.AttrEKCert|nv.AttrWritten|nv.AttrWriteLocked {
		t.Fatalf("platform index %+v", ix)
	}
	pc, err := ekcert.ParsePlatform(id.Platform)
	if err != nil {
		t.Fatal(err)
	}
	if pc.Manufacturer != "pipeline test CA" || pc.Model != "m" || !strings.Contains(pc.Version, "svsm-2026") || pc.PlatformSer != "vm-9" {
		t.Errorf("platform %+v", pc)
	}
	vo := VerifyOptions{CA: roots(ca), Algs: ek.Algs, DevID: DevIDSpec{DeviceSerial: "vm-9", Platform: &PlatformInfo{}}}
	if f := Verify(im, vo); len(f) != 0 {
		t.Errorf("findings %v", f)
	}
	if r, _ := Describe(im); r.Platform == nil || r.Platform.Serial != "vm-9" || r.Platform.Error != "" {
		t.Errorf("describe %+v", r.Platform)
	}
	// Another TPM's platform certificate: holder and serial do not match.
	_, _, oid, err := ManufactureWithDevID(ManufactureOptions{Profile: p, Algs: ek.Algs, CertOptions: CertOptions{CA: testCA(t, false)},
		DevID: DevIDSpec{DeviceSerial: "vm-8", Platform: &PlatformInfo{}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := putIndex(im, PlatformCertIndex, oid.Platform, false); err != nil {
		t.Fatal(err)
	}
	f := strings.Join(Verify(im, vo), "\n")
	for _, w := range []string{"not signed by the CA", "holder is not the RSA EK certificate", `platformSerial is "vm-8", want "vm-9"`} {
		if !strings.Contains(f, w) {
			t.Errorf("no finding %q in %s", w, f)
		}
	}
	opts.Algs = []ek.Alg{ek.ECCP256}
	if _, _, _, err := ManufactureWithDevID(opts); err == nil || !strings.Contains(err.Error(), "RSA EK certificate") {
		t.Errorf("platform certificate without an RSA EK: %v", err)
	}
}
