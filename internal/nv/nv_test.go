package nv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

var goldenDir = map[string]string{"svsm-poc": "poc", "svsm-2026": "upstream"}

var goldenFiles = []string{
	"a0-manufactured-only", "a-fresh-startup-shutdown", "b-ekcert-defined-written",
	"c-ekcert-writelocked", "d-plus-rsa-ek-persisted-0x81010001",
}

func golden(t *testing.T, p *Profile, name string) []byte {
	return sharedvec.Read(t, "tpm/golden/"+goldenDir[p.Name]+"/"+name+".NVChip")
}

func TestProfilesValid(t *testing.T) {
	for _, p := range All() {
		if err := p.Validate(); err != nil {
			t.Error(err)
		}
	}
	if _, err := Get("nope"); err == nil || !strings.Contains(err.Error(), "svsm-poc") {
		t.Errorf("unknown profile error: %v", err)
	}
}

func TestRoundTripGolden(t *testing.T) {
	for _, p := range All() {
		for _, g := range goldenFiles {
			data := golden(t, p, g)
			im, err := Parse(p, data)
			if err != nil {
				t.Fatalf("%s/%s: %v", p.Name, g, err)
			}
			if !bytes.Equal(im.Bytes(), data) {
				t.Errorf("%s/%s: parse+serialize changed the bytes", p.Name, g)
			}
			det, err := Detect(data)
			if err != nil || det.Profile != p {
				t.Errorf("%s/%s: detected %v, %v", p.Name, g, det, err)
			}
			// the other profile must refuse it
			for _, q := range All() {
				if q != p {
					if _, err := Parse(q, data); err == nil || !strings.Contains(err.Error(), p.Name) {
						t.Errorf("%s/%s parsed as %s: %v", p.Name, g, q.Name, err)
					}
				}
			}
		}
	}
}

func TestGoldenContents(t *testing.T) {
	for _, p := range All() {
		b, err := Parse(p, golden(t, p, "b-ekcert-defined-written"))
		if err != nil {
			t.Fatal(err)
		}
		cert := sharedvec.Read(t, "tpm/golden/ekcert.der")
		ix := b.LookupIndex(0x01C00002)
		if ix == nil || ix.Attributes != 0x62072001 || !bytes.Equal(ix.Data, cert) || ix.NameAlg != 0x000B {
			t.Fatalf("%s: golden b index: %+v", p.Name, ix)
		}
		d, _ := Parse(p, golden(t, p, "d-plus-rsa-ek-persisted-0x81010001"))
		if d.Find(0x81010001) < 0 {
			t.Errorf("%s: persistent object not found in golden d", p.Name)
		}
	}
}

// describe names the field an offset belongs to, for readable diffs.
func describe(p *Profile, off int) string {
	for _, r := range p.Regions {
		if off >= r.Off && off < r.Off+r.Size {
			for _, f := range r.Fields {
				if off >= r.Off+f.Off && off < r.Off+f.Off+f.Size {
					return fmt.Sprintf("%s.%s+%d", r.Name, f.Name, off-r.Off-f.Off)
				}
			}
			return fmt.Sprintf("%s padding @%d", r.Name, off-r.Off)
		}
	}
	return fmt.Sprintf("dynamic area +%d", off-p.DynamicStart)
}

// randomField reports whether off lies in a field that manufacture
// randomizes (or derives from random bytes).
func randomField(p *Profile, off int) bool {
	for _, r := range p.Regions {
		for _, f := range r.Fields {
			if (f.Random || f.CopyFrom != "") && off >= r.Off+f.Off && off < r.Off+f.Off+f.Size {
				if f.Kind == Seed && off < r.Off+f.Off+2 {
					return false // the TPM2B size field is deterministic
				}
				return true
			}
		}
	}
	return false
}

func TestManufactureMatchesGoldenA0(t *testing.T) {
	for _, p := range All() {
		want := golden(t, p, "a0-manufactured-only")
		im, err := Manufacture(p)
		if err != nil {
			t.Fatal(err)
		}
		got := im.Bytes()
		var diffs []string
		for i := range want {
			if got[i] != want[i] && !randomField(p, i) {
				diffs = append(diffs, fmt.Sprintf("  0x%04x %s: got %02x want %02x", i, describe(p, i), got[i], want[i]))
			}
		}
		if len(diffs) > 0 {
			t.Errorf("%s: %d deterministic bytes differ from golden a0:\n%s", p.Name, len(diffs), strings.Join(diffs[:min(len(diffs), 40)], "\n"))
		}
		// the random fields are random: two manufactures differ in each
		im2, _ := Manufacture(p)
		for _, name := range append(seedFields, "drbgState.seed") {
			if bytes.Equal(im.Field(name), im2.Field(name)) {
				t.Errorf("%s: %s not fresh", p.Name, name)
			}
		}
		if _, err := Parse(p, got); err != nil {
			t.Errorf("%s: manufactured image does not parse: %v", p.Name, err)
		}
		if v := im.Field("drbgState.seed")[32:]; !bytes.Equal(v, im.Field("drbgState.lastValue")) {
			t.Errorf("%s: DRBG lastValue must equal V, as the TPM leaves it", p.Name)
		}
	}
}

func TestDefineIndexReproducesGoldenB(t *testing.T) {
	for _, p := range All() {
		cert := sharedvec.Read(t, "tpm/golden/ekcert.der")
		a, err := Parse(p, golden(t, p, "a-fresh-startup-shutdown"))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.DefineIndex(IndexSpec{Handle: 0x01C00002, Attributes: AttrEKCert, Data: cert}); err != nil {
			t.Fatal(err)
		}
		got := a.Bytes()
		want := golden(t, p, "b-ekcert-defined-written")
		// the NV_INDEX trailing padding (2 bytes) is stack garbage in the TPM
		padStart := p.DynamicStart + 4 + p.Index.Size - 2
		for i := p.DynamicStart; i < p.NVSize; i++ {
			if got[i] != want[i] && (i < padStart || i >= padStart+2) {
				t.Fatalf("%s: dynamic area differs from golden b at 0x%04x (%s): %02x vs %02x", p.Name, i, describe(p, i), got[i], want[i])
			}
		}
		// write-locking b's index gives c's dynamic area
		b, _ := Parse(p, want)
		if err := b.SetWriteLock(0x01C00002); err != nil {
			t.Fatal(err)
		}
		c := golden(t, p, "c-ekcert-writelocked")
		if !bytes.Equal(b.Bytes()[p.DynamicStart:], c[p.DynamicStart:]) {
			t.Errorf("%s: write-locked dynamic area differs from golden c", p.Name)
		}
		// deleting the index restores a's dynamic area (a fresh list)
		if err := b.Delete(0x01C00002); err != nil {
			t.Fatal(err)
		}
		aa := golden(t, p, "a-fresh-startup-shutdown")
		if !bytes.Equal(b.Bytes()[p.DynamicStart:], aa[p.DynamicStart:]) {
			t.Errorf("%s: delete does not restore the empty list", p.Name)
		}
	}
}

func TestDefineIndexLimits(t *testing.T) {
	p := SVSMPoC
	im, _ := Manufacture(p)
	if err := im.DefineIndex(IndexSpec{Handle: 0x01C00002, Attributes: AttrEKCert, Data: make([]byte, 2049)}); err == nil || !strings.Contains(err.Error(), "MAX_NV_INDEX_SIZE") {
		t.Errorf("oversized: %v", err)
	}
	if err := im.DefineIndex(IndexSpec{Handle: 0x81000001, Attributes: AttrEKCert, Data: []byte{1}}); err == nil {
		t.Error("persistent handle accepted")
	}
	// fill NV until the TPM's reservation stops it
	n := 0
	var err error
	for ; n < 20; n++ {
		if err = im.DefineIndex(IndexSpec{Handle: 0x01C00100 + uint32(n), Attributes: AttrEKCert, Data: make([]byte, 2048)}); err != nil {
			break
		}
	}
	if _, ok := err.(interface{ Unwrap() error }); !ok || !strings.Contains(err.Error(), "not enough NV space") {
		t.Fatalf("after %d indices: %v", n, err)
	}
	// 12384 bytes of list space, 16 + 2*2112 + 8*128 reserved: 3 indices of 2164 bytes fit
	free := p.NVSize - p.DynamicStart - p.TerminatorSize
	reserved := 4 + 12 + 2*2112 + 8*128
	if want := (free + 12 - reserved) / (4 + 116 + 2048); n != want {
		t.Errorf("%d indices fit, NvTestSpace allows %d", n, want)
	}
	if err := im.DefineIndex(IndexSpec{Handle: 0x01C00100, Attributes: AttrEKCert, Data: []byte{1}}); err == nil {
		t.Error("duplicate accepted")
	}
}

func TestParseRejects(t *testing.T) {
	p := SVSMPoC
	im, _ := Manufacture(p)
	im.DefineIndex(IndexSpec{Handle: 0x01C00002, Attributes: AttrEKCert, Data: []byte("cert")})
	good := im.Bytes()
	mod := func(f func(b []byte)) []byte { b := append([]byte(nil), good...); f(b); return b }
	seedOff, _ := p.Abs("EPSeed")
	cases := map[string][]byte{
		"size is 100":                         good[:100],
		"runs off the end":                    mod(func(b []byte) { binary.LittleEndian.PutUint32(b[p.DynamicStart:], 20000) }),
		"entry at 0x101c has size 4294967295": mod(func(b []byte) { binary.LittleEndian.PutUint32(b[p.DynamicStart+4+116+4:], 0xFFFFFFFF) }),
		"belongs to profile svsm-2026":        mod(func(b []byte) { binary.LittleEndian.PutUint32(b[940:], SVSM2026.FirmwareV1) }),
		"EPSeed has size 32":                  mod(func(b []byte) { binary.LittleEndian.PutUint16(b[seedOff:], 32) }),
		"neither an NV index":                 mod(func(b []byte) { b[p.DynamicStart+7] = 0x02 }),
	}
	for want, data := range cases {
		if _, err := Parse(p, data); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q, got %v", want, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range All() {
		im, _ := Manufacture(p)
		im.DefineIndex(IndexSpec{Handle: 0x01C00002, Attributes: AttrEKCert, Data: bytes.Repeat([]byte{0x30}, 500)})
		f.Add(im.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range All() {
			if len(data) < p.NVSize && len(data) > 0 {
				// mostly fuzz the dynamic area of a valid image
				base, _ := Manufacture(p)
				b := base.Bytes()
				copy(b[p.DynamicStart:], data)
				data2 := b
				if im, err := Parse(p, data2); err == nil && !bytes.Equal(im.Bytes(), data2) {
					t.Fatalf("%s: round trip differs", p.Name)
				}
			}
			if im, err := Parse(p, data); err == nil && !bytes.Equal(im.Bytes(), data) {
				t.Fatalf("%s: round trip differs", p.Name)
			}
		}
	})
}

func BenchmarkManufacture(b *testing.B) {
	for i := 0; i < b.N; i++ {
		im, _ := Manufacture(SVSMPoC)
		_ = im.Bytes()
	}
}

func TestFieldsDecode(t *testing.T) {
	im, _ := Manufacture(SVSM2026)
	seen := map[string]FieldValue{}
	for _, f := range im.Fields() {
		seen[f.Region+"."+f.Name] = f
	}
	if v := seen["PERSISTENT_DATA.firmwareV1"]; v.Uint == nil || *v.Uint != 0x20250320 {
		t.Errorf("firmwareV1: %+v", v)
	}
	if v := seen["PERSISTENT_DATA.maxTries"]; v.Uint == nil || *v.Uint != 3 {
		t.Errorf("maxTries: %+v", v)
	}
	if v := seen["ORDERLY_DATA.drbgState.magic"]; v.Uint == nil || *v.Uint != 0x47425244 {
		t.Errorf("DRBG magic: %+v", v)
	}
	if v := seen["STATE_CLEAR_DATA.readOnly"]; v.Offset != 3248 {
		t.Errorf("readOnly: %+v", v)
	}
	eps := seen["PERSISTENT_DATA.EPSeed"]
	if eps.Fingerprint == "" || eps.Hex != "" {
		t.Errorf("EPSeed exposed: %+v", eps)
	}
}
