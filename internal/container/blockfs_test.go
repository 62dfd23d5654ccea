package container

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/blockfs"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
	"github.com/vtpm-mfg/vtpm-mfg/internal/xts"
)

func bfCreate(path string, key, nv []byte, size int64, overwrite bool) error {
	return Create(blockFS{}, path, key, nv, CreateOptions{Size: size, Overwrite: overwrite})
}

func bfRead(path string, key []byte) ([]byte, *Info, error) { return blockFS{}.Read(path, key) }

func bfUpdate(path string, oldKey, newKey []byte, change func([]byte) ([]byte, error)) error {
	_, err := blockFS{}.Update(path, oldKey, newKey, change)
	return err
}

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
	if err := bfCreate(path, k1, nv, blockfs.DefaultImageSize, false); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if len(got) != blockfs.DefaultImageSize {
		t.Fatalf("size %d", len(got))
	}
	if !bytes.Equal(got[:blockfs.MinImageSize], want[:blockfs.MinImageSize]) {
		t.Fatal("image differs from svsm/vectors/poc-a0.img")
	}
	back, info, err := bfRead(path, k1)
	if err != nil || !bytes.Equal(back, nv) {
		t.Fatalf("read back: %v", err)
	}
	// The 33 sectors written occupy at least 16896 bytes: a file system
	// that reports anything less does not say (overlay, tmpfs).
	if info.AllocatedSize < blockfs.MinImageSize || info.AllocatedSize > 64*1024 {
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
	nv := make([]byte, blockfs.NVSize)
	good := filepath.Join(dir, "good.img")
	if err := bfCreate(good, key, nv, blockfs.MinImageSize, false); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(good)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	// a valid image whose metadata says size 0
	badSize, _ := blockfs.Encode(nv, key)
	plain := blockfs.Metadata{Magic: blockfs.Magic, Size: 0}.Encode()
	c, _ := xts.New(key)
	c.EncryptSectors(badSize[:blockfs.SectorSize], plain)
	cases := []struct{ path, want string }{
		{write("short.img", data[:blockfs.MinImageSize-1]), "too short"},
		{write("garbage.img", append(bytes.Repeat([]byte{0x5a}, blockfs.SectorSize), data[blockfs.SectorSize:]...)), "metadata magic mismatch"},
		{write("size0.img", badSize), "re-manufacture"},
		{filepath.Join(dir, "missing.img"), "no such state image"},
		{dir, "is a directory"},
	}
	for _, c := range cases {
		_, _, err := bfRead(c.path, key)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), c.path+": ") {
			t.Errorf("%s: error %v, want %q", c.path, err, c.want)
		}
	}
	if _, _, err := bfRead(good, newKey(t)); err == nil || !strings.Contains(err.Error(), "wrong key") {
		t.Errorf("wrong key: %v", err)
	}
}

func TestCreateRefusesOverwrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.img")
	os.WriteFile(p, []byte("keep"), 0o644)
	err := bfCreate(p, newKey(t), make([]byte, blockfs.NVSize), blockfs.MinImageSize, false)
	if !errors.Is(err, atomicfile.ErrExists) {
		t.Fatalf("got %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "keep" {
		t.Fatal("file changed")
	}
	if err := bfCreate(p, newKey(t), make([]byte, 100), blockfs.MinImageSize, true); err == nil {
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
	nv := make([]byte, blockfs.NVSize)
	rand.Read(nv)
	if err := bfCreate(p, k1, nv, blockfs.DefaultImageSize, false); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o640)
	// user data far beyond the used sectors must survive
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt([]byte("tail data"), 8<<20)
	f.Close()
	before, _ := os.ReadFile(p)
	if err := bfUpdate(p, k2, k1, nil); err == nil {
		t.Fatal("wrong old key accepted")
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("image changed after refused rotation")
	}
	if err := bfUpdate(p, k1, k2, nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := bfRead(p, k2)
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
	if _, _, err := bfRead(p, k1); err == nil {
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
	bfCreate(p, k, make([]byte, blockfs.NVSize), blockfs.MinImageSize, false)
	before, _ := os.ReadFile(p)
	err := bfUpdate(p, k, nil, func(nv []byte) ([]byte, error) { return nil, errors.New("boom") })
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
	if err := bfCreate(p, k1, make([]byte, blockfs.NVSize), size, false); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := bfUpdate(p, k1, k2, nil); err != nil {
			b.Fatal(err)
		}
		k1, k2 = k2, k1
	}
}

func BenchmarkRotateKey16MiB(b *testing.B) { benchRotate(b, 16<<20) }
func BenchmarkRotateKey1GiB(b *testing.B)  { benchRotate(b, 1<<30) }
