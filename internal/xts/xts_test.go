package xts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func seqKey() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// The worked examples of the SVSM state image format (key 00 01 .. 3f).
func TestWorkedExamples(t *testing.T) {
	c, err := New(seqKey())
	if err != nil {
		t.Fatal(err)
	}
	meta := make([]byte, SectorSize)
	copy(meta, []byte{0xEF, 0xFD, 0xB6, 0xF5, 0x0D, 0x80, 0x80, 0x01})
	for _, tc := range []struct {
		name, prefix, sum string
		plain             []byte
	}{
		{"zero sector", "cd6b103236fbd87dba93e9001e29bc3d", "9943ddf45f593dcb9bcd2e3043ea706a3a7f0d35bfca0ddcfa7c0803e588601a", make([]byte, SectorSize)},
		{"metadata sector", "e7f8891136f2a54d34ecfe081b581313", "75b977cd0ff679779e3f55e35150f4dd930d6cb6b4b464cc69d688ce241e3fb3", meta},
	} {
		out := make([]byte, SectorSize)
		if err := c.EncryptSectors(out, tc.plain); err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(out[:16]); got != tc.prefix {
			t.Errorf("%s: starts %s, want %s", tc.name, got, tc.prefix)
		}
		sum := sha256.Sum256(out)
		if got := hex.EncodeToString(sum[:]); got != tc.sum {
			t.Errorf("%s: sha256 %s, want %s", tc.name, got, tc.sum)
		}
		back := make([]byte, SectorSize)
		if err := c.DecryptSectors(back, out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back, tc.plain) {
			t.Errorf("%s: decrypt does not invert encrypt", tc.name)
		}
	}
}

func TestTweakIsZeroForEverySector(t *testing.T) {
	c, _ := New(seqKey())
	src := make([]byte, 3*SectorSize)
	out := make([]byte, len(src))
	if err := c.EncryptSectors(out, src); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out[:SectorSize], out[SectorSize:2*SectorSize]) {
		t.Fatal("equal sectors must encrypt identically (tweak 0)")
	}
}

func TestRejects(t *testing.T) {
	if _, err := New(make([]byte, 32)); err == nil {
		t.Error("32-byte key accepted")
	}
	c, _ := New(seqKey())
	if err := c.EncryptSectors(make([]byte, 100), make([]byte, 100)); err == nil {
		t.Error("partial sector accepted")
	}
}

func BenchmarkEncrypt1MiB(b *testing.B) {
	c, _ := New(seqKey())
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		_ = c.EncryptSectors(buf, buf)
	}
}

func BenchmarkDecrypt1MiB(b *testing.B) {
	c, _ := New(seqKey())
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		_ = c.DecryptSectors(buf, buf)
	}
}
