package blockfs

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
	"github.com/vtpm-mfg/vtpm-mfg/internal/xts"
)

func TestMetadataEncoding(t *testing.T) {
	s := Metadata{Magic: Magic, Size: NVSize}.Encode()
	want := []byte{0xEF, 0xFD, 0xB6, 0xF5, 0x0D, 0x80, 0x80, 0x01, 0, 0}
	if !bytes.Equal(s[:10], want) || len(s) != SectorSize {
		t.Fatalf("metadata %x", s[:10])
	}
	m, err := DecodeMetadata(s)
	if err != nil || m.Magic != Magic || m.Size != NVSize {
		t.Fatalf("decode: %+v %v", m, err)
	}
	if z, _ := DecodeMetadata(Metadata{Magic: Magic}.Encode()); z.Size != 0 {
		t.Fatal("size 0")
	}
	bad := bytes.Repeat([]byte{0xff}, SectorSize)
	if _, err := DecodeMetadata(bad); err == nil {
		t.Fatal("non-terminating varint accepted")
	}
}

// Packing golden a0 under the test key reproduces the measured image.
func TestPackReproducesVector(t *testing.T) {
	nv := sharedvec.Read(t, "tpm/golden/poc/a0-manufactured-only.NVChip")
	keyRaw := sharedvec.Read(t, "svsm/vectors/key-00-3f.bin")
	keyHex := sharedvec.Read(t, "svsm/vectors/key-00-3f.hex")
	want := sharedvec.Read(t, "svsm/vectors/poc-a0.img")
	k1, err := keyfile.Parse("raw", keyRaw)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := keyfile.Parse("hex", keyHex)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("hex and raw key forms differ: %v", err)
	}
	path := filepath.Join(t.TempDir(), "state.img")
	if err := Create(path, k1, nv, DefaultImageSize, false); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if len(got) != DefaultImageSize {
		t.Fatalf("size %d", len(got))
	}
	if !bytes.Equal(got[:MinImageSize], want[:MinImageSize]) {
		t.Fatal("image differs from svsm/vectors/poc-a0.img")
	}
	back, info, err := Read(path, k1)
	if err != nil || !bytes.Equal(back, nv) {
		t.Fatalf("read back: %v", err)
	}
	// The 33 sectors written occupy at least 16896 bytes: a file system
	// that reports anything less does not say (overlay, tmpfs).
	if info.AllocatedSize < MinImageSize || info.AllocatedSize > 64*1024 {
		t.Errorf("image not sparse, or allocation not reported: %d bytes allocated", info.AllocatedSize)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
}

func newKey(t testing.TB) []byte {
	k := make([]byte, 64)
	rand.Read(k)
	return k
}

func TestReadRejects(t *testing.T) {
	dir := t.TempDir()
	key := newKey(t)
	nv := make([]byte, NVSize)
	good := filepath.Join(dir, "good.img")
	if err := Create(good, key, nv, MinImageSize, false); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(good)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	// a valid image whose metadata says size 0
	badSize, _ := Encode(nv, key)
	plain := Metadata{Magic: Magic, Size: 0}.Encode()
	c, _ := xts.New(key)
	c.EncryptSectors(badSize[:SectorSize], plain)
	cases := []struct{ path, want string }{
		{write("short.img", data[:MinImageSize-1]), "too short"},
		{write("garbage.img", append(bytes.Repeat([]byte{0x5a}, SectorSize), data[SectorSize:]...)), "metadata magic mismatch"},
		{write("size0.img", badSize), "re-manufacture"},
		{filepath.Join(dir, "missing.img"), "cannot open"},
		{dir, "is a directory"},
	}
	for _, c := range cases {
		_, _, err := Read(c.path, key)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), c.path+": ") {
			t.Errorf("%s: error %v, want %q", c.path, err, c.want)
		}
	}
	if _, _, err := Read(good, newKey(t)); err == nil || !strings.Contains(err.Error(), "wrong key") {
		t.Errorf("wrong key: %v", err)
	}
}

func TestCreateRefusesOverwrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.img")
	os.WriteFile(p, []byte("keep"), 0o644)
	err := Create(p, newKey(t), make([]byte, NVSize), MinImageSize, false)
	if !errors.Is(err, atomicfile.ErrExists) {
		t.Fatalf("got %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "keep" {
		t.Fatal("file changed")
	}
	if err := Create(p, newKey(t), make([]byte, 100), MinImageSize, true); err == nil {
		t.Fatal("short NVChip accepted")
	}
	if b, _ := os.ReadFile(p); string(b) != "keep" {
		t.Fatal("file changed")
	}
}

func TestUpdateRotateKeepsDataAndMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.img")
	k1, k2 := newKey(t), newKey(t)
	nv := make([]byte, NVSize)
	rand.Read(nv)
	if err := Create(p, k1, nv, DefaultImageSize, false); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o640)
	// user data far beyond the used sectors must survive
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt([]byte("tail data"), 8<<20)
	f.Close()
	before, _ := os.ReadFile(p)
	if err := Update(p, k2, k1, nil); err == nil {
		t.Fatal("wrong old key accepted")
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("image changed after refused rotation")
	}
	if err := Update(p, k1, k2, nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := Read(p, k2)
	if err != nil || !bytes.Equal(got, nv) {
		t.Fatalf("after rotate: %v", err)
	}
	after, _ := os.ReadFile(p)
	if len(after) != len(before) || string(after[8<<20:8<<20+9]) != "tail data" {
		t.Fatal("data outside the NVChip was lost")
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v not kept", st.Mode())
	}
	if _, _, err := Read(p, k1); err == nil {
		t.Fatal("old key still opens the image")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestUpdateChangeErrorLeavesImage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.img")
	k := newKey(t)
	Create(p, k, make([]byte, NVSize), MinImageSize, false)
	before, _ := os.ReadFile(p)
	err := Update(p, k, nil, func(nv []byte) ([]byte, error) { return nil, errors.New("boom") })
	if err == nil {
		t.Fatal("no error")
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("changed")
	}
}

func benchRotate(b *testing.B, size int64) {
	p := filepath.Join(b.TempDir(), "s.img")
	k1, k2 := newKey(b), newKey(b)
	if err := Create(p, k1, make([]byte, NVSize), size, false); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := Update(p, k1, k2, nil); err != nil {
			b.Fatal(err)
		}
		k1, k2 = k2, k1
	}
}

func BenchmarkRotateKey16MiB(b *testing.B) { benchRotate(b, 16<<20) }
func BenchmarkRotateKey1GiB(b *testing.B)  { benchRotate(b, 1<<30) }
