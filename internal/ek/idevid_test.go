package ek

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// The templates carry the attribute words, policies and unique fields
// the DevID spec and both implementations (swtpm, rust-keylime) use, and
// the TPM's creation checks accept them.
func TestDevIDTemplates(t *testing.T) {
	for _, kind := range []DevIDKind{IAK, IDevID} {
		for _, alg := range DevIDAlgs {
			tm, err := DevIDTemplate(kind, alg)
			if err != nil {
				t.Fatal(err)
			}
			raw := tpm2.Marshal(&tm)
			attrs := binary.BigEndian.Uint32(raw[4:8])
			want := map[DevIDKind]uint32{IAK: 0x000500F2, IDevID: 0x000400F2}[kind]
			if attrs != want {
				t.Errorf("%s %s: objectAttributes %#08x, want %#08x", kind, alg, attrs, want)
			}
			h, _ := NameHash(tm.NameAlg)
			if len(tm.AuthPolicy.Buffer) != h.Size() {
				t.Errorf("%s %s: authPolicy of %d bytes for nameAlg %#x", kind, alg, len(tm.AuthPolicy.Buffer), tm.NameAlg)
			}
			if _, err := checkTemplate(&tm); err != nil {
				t.Errorf("%s %s: %v", kind, alg, err)
			}
			u := DevIDUnique(kind)
			switch tm.Type {
			case tpm2.TPMAlgRSA:
				n, _ := tm.Unique.RSA()
				r, _ := tm.Parameters.RSADetail()
				if !bytes.Equal(n.Buffer, u) {
					t.Errorf("%s %s: unique %q", kind, alg, n.Buffer)
				}
				wantScheme := map[DevIDKind]tpm2.TPMAlgID{IAK: tpm2.TPMAlgRSAPSS, IDevID: tpm2.TPMAlgNull}[kind]
				if r.Scheme.Scheme != wantScheme || r.Symmetric.Algorithm != tpm2.TPMAlgNull {
					t.Errorf("%s %s: scheme %#x, symmetric %#x", kind, alg, r.Scheme.Scheme, r.Symmetric.Algorithm)
				}
			case tpm2.TPMAlgECC:
				pt, _ := tm.Unique.ECC()
				e, _ := tm.Parameters.ECCDetail()
				if !bytes.Equal(pt.X.Buffer, u) || !bytes.Equal(pt.Y.Buffer, u) {
					t.Errorf("%s %s: unique x %q y %q", kind, alg, pt.X.Buffer, pt.Y.Buffer)
				}
				if e.Scheme.Scheme != tpm2.TPMAlgECDSA || schemeHash(tpm2.Marshal(&e.Scheme)) != tm.NameAlg {
					t.Errorf("%s %s: scheme %x", kind, alg, tpm2.Marshal(&e.Scheme))
				}
			}
		}
	}
	if _, err := DevIDTemplate(IAK, RSA4096); err == nil {
		t.Error("RSA-4096 IAK accepted")
	}
	if _, err := ParseDevIDAlg("h-3"); err == nil {
		t.Error("EK template name accepted as a device identity key type")
	}
}

// The IAK and the IDevID of one seed are different keys, and neither is
// an EK of the same type.
func TestDevIDKeysDiffer(t *testing.T) {
	eps := bytes.Repeat([]byte{7}, 64)
	iak, err := DeriveDevID(eps, IAK, ECCP256, Reversed1_84)
	if err != nil {
		t.Fatal(err)
	}
	idev, _ := DeriveDevID(eps, IDevID, ECCP256, Reversed1_84)
	ekk, _ := Derive(eps, ECCP256, Reversed1_84, nil)
	x := func(k *Key) []byte { pt, _ := k.Public.Unique.ECC(); return pt.X.Buffer }
	a, b, c := x(iak), x(idev), x(ekk)
	if bytes.Equal(a, b) || bytes.Equal(a, c) || bytes.Equal(b, c) {
		t.Error("device identity keys collide")
	}
}
