package pipeline

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

// Persisting the RSA EK of golden b gives golden d byte for byte: the
// OBJECT struct TPM2_EvictControl stored, with the seedValue, private
// primes and exponents, names and attributes derived here.
func TestPersistEKReproducesGoldenD(t *testing.T) {
	for _, dir := range []string{"poc", "upstream"} {
		b := sharedvec.Read(t, "tpm/golden/"+dir+"/b-ekcert-defined-written.NVChip")
		d := sharedvec.Read(t, "tpm/golden/"+dir+"/d-plus-rsa-ek-persisted-0x81010001.NVChip")
		im, err := nv.Detect(b)
		if err != nil {
			t.Fatal(err)
		}
		h, err := PersistEK(im, ek.RSA2048)
		if err != nil || h != 0x81010001 {
			t.Fatalf("%s: %v", dir, err)
		}
		// d was made in a later boot cycle: its fixed area (reset counters,
		// clock) differs; the dynamic area must be the same.
		start := im.Profile.DynamicStart
		got, want := im.Bytes()[start:], d[start:]
		if !bytes.Equal(got, want) {
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%s: differs from golden d first at 0x%04x: got %x want %x", dir, start+i, got[i:min(i+16, len(got))], want[i:min(i+16, len(want))])
				}
			}
		}
		// The public area reads back.
		back, _ := nv.Detect(d)
		pub, hier, err := nv.ObjectPublic(back.Entries[back.Find(0x81010001)])
		k, _ := DeriveEK(im, ek.RSA2048)
		if err != nil || hier != nv.RHEndorsement || !bytes.Equal(tpm2.Marshal(pub), tpm2.Marshal(k.Public)) {
			t.Errorf("%s: public area read back: %v", dir, err)
		}
	}
}

// The SRK template is the one systemd uses, and derives as the real TPM
// derived SRK-ECC from the vectors' storage seeds.
func TestSRKTemplate(t *testing.T) {
	var v struct {
		Templates map[string]struct{ Template string } `json:"templates"`
	}
	if err := json.Unmarshal(sharedvec.Read(t, "tpm/ek-vectors-high.json"), &v); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(tpm2.Marshal(SRKTemplate())); got != v.Templates["SRK-ECC"].Template {
		t.Errorf("SRK template %s, the vectors' SRK-ECC is %s", got, v.Templates["SRK-ECC"].Template)
	}
}

// verify notices a persisted EK or SRK that is not this TPM's.
func TestVerifyPersistedKeys(t *testing.T) {
	p, _ := nv.Get("svsm-2026")
	a, err := nv.Manufacture(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := nv.Manufacture(p)
	for _, im := range []*nv.Image{a, b} {
		if _, err := PersistEK(im, ek.ECCP256); err != nil {
			t.Fatal(err)
		}
		if _, err := PersistSRK(im); err != nil {
			t.Fatal(err)
		}
	}
	derive := func(alg ek.Alg) (*ek.Key, error) { return DeriveEK(a, alg) }
	if f := verifyPersistent(a, derive); len(f) != 0 {
		t.Fatalf("own keys: %v", f)
	}
	// Give a the objects of b.
	for i, e := range a.Entries {
		if j := b.Find(e.Handle); e.Index == nil && j >= 0 {
			a.Entries[i].Object = b.Entries[j].Object
		}
	}
	f := verifyPersistent(a, derive)
	if len(f) != 2 || !strings.Contains(f[0]+f[1], "ecc-p256 EK at 0x81010002 is not the key") || !strings.Contains(f[0]+f[1], "SRK at 0x81000001") {
		t.Errorf("foreign keys: %v", f)
	}
}
