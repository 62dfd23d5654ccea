package container

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/cocoonfs"
	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestCocoonCreateReadUpdate(t *testing.T) {
	c, _ := Get("cocoonfs")
	dir := t.TempDir()
	p := filepath.Join(dir, "state.img")
	key, key2, nv := randBytes(64), randBytes(64), randBytes(16384)
	if err := Create(c, p, key, nv, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if f, _ := DetectFile(p); f.Name() != "cocoonfs" {
		t.Fatalf("detected %s", f.Name())
	}
	got, info, err := c.Read(p, key)
	if err != nil || !bytes.Equal(got, nv) || len(info.Findings) != 0 || info.ImageSize != DefaultCocoonSize {
		t.Fatalf("read back: %v %+v", err, info)
	}
	if _, _, err := c.Read(p, key2); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("wrong key: %v", err)
	}
	nv2 := randBytes(16384)
	if _, err := c.Update(p, key, key2, func([]byte) ([]byte, error) { return nv2, nil }); err != nil {
		t.Fatal(err)
	}
	if got, _, err := c.Read(p, key2); err != nil || !bytes.Equal(got, nv2) {
		t.Fatalf("after update: %v", err)
	}
	if _, _, err := c.Read(p, key); err == nil {
		t.Fatal("old key still opens the image")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left %d files", len(ents))
	}
	min := c.MinSize(CreateOptions{})
	if err := Create(c, filepath.Join(dir, "small.img"), key, nv, CreateOptions{Size: min - 512}); err == nil {
		t.Error("image below the minimum size was created")
	}
	if _, err := os.Stat(filepath.Join(dir, "small.img")); err == nil {
		t.Error("refused image left a file")
	}
}

// A rewrite of an image the reference implementation wrote after many
// transactions keeps every other file and its flags.
func TestCocoonUpdateChurn(t *testing.T) {
	src := sharedvec.Read(t, "svsm/cocoonfs/f-churn-aes128-8M-n.img")
	key := sharedvec.Read(t, "svsm/vectors/key-00-3f.bin")
	before, err := cocoonfs.Open(src, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "churn.img")
	os.WriteFile(p, src, 0o640)
	c, _ := Get("cocoonfs")
	key2 := randBytes(64)
	nv := randBytes(16384)
	if _, err := c.Update(p, key, key2, func([]byte) ([]byte, error) { return nv, nil }); err != nil {
		t.Fatal(err)
	}
	img, _ := os.ReadFile(p)
	after, err := cocoonfs.Open(img, key2)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Inodes) != len(before.Inodes) {
		t.Fatalf("%d inodes, had %d", len(after.Inodes), len(before.Inodes))
	}
	for i, in := range after.Inodes {
		want := before.Inodes[i]
		if in.Number == NVChipInode {
			want.Data = nv
		}
		if in.Number != want.Number || in.Flags != want.Flags || !bytes.Equal(in.Data, want.Data) {
			t.Errorf("inode 0x%x changed", in.Number)
		}
	}
	if !bytes.Equal(after.Info.AuxMetadata, before.Info.AuxMetadata) || after.Info.Layout != before.Info.Layout {
		t.Error("aux metadata or layout changed")
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 || st.Size() != int64(len(src)) {
		t.Errorf("mode %v size %d", st.Mode(), st.Size())
	}
}

// Without the "manufactured" marker the SVSM re-manufactures: reading
// reports it, and rewrites are refused.
func TestCocoonMissingMarker(t *testing.T) {
	l, _ := cocoonfs.DefaultLayout(128)
	key, nv := randBytes(64), randBytes(16384)
	for _, marker := range [][]byte{nil, []byte("COCONUT-SVSM\n")} {
		in := []cocoonfs.Inode{{Number: NVChipInode, Data: nv}}
		if marker != nil {
			in = append(in, cocoonfs.Inode{Number: MarkerInode, Data: marker})
		}
		img, err := cocoonfs.Write(cocoonfs.WriteOptions{Key: key, Layout: l, ImageBytes: 1 << 20, Inodes: in})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "s.img")
		os.WriteFile(p, img, 0o600)
		c, _ := Get("cocoonfs")
		_, info, err := c.Read(p, key)
		if err != nil || len(info.Findings) != 1 || !strings.Contains(info.Findings[0], "re-manufacture") {
			t.Fatalf("marker %q: %v %v", marker, err, info)
		}
		_, err = c.Update(p, key, nil, func(b []byte) ([]byte, error) { return b, nil })
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("marker %q: rewrite: %v", marker, err)
		}
		if after, _ := os.ReadFile(p); !bytes.Equal(after, img) {
			t.Error("refused rewrite changed the image")
		}
	}
}

// An image made with zero free space stays sparse through rewrites; the
// default one is noise throughout.
func TestCocoonSparseKept(t *testing.T) {
	c, _ := Get("cocoonfs")
	dir := t.TempDir()
	key := randBytes(64)
	for _, zero := range []bool{true, false} {
		p := filepath.Join(dir, fmt.Sprint(zero))
		if err := Create(c, p, key, randBytes(16384), CreateOptions{Size: 8 << 20, ZeroFree: zero}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Update(p, key, randBytes(64), nil); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(p)
		a := atomicfile.Allocated(st)
		if zero && (a <= 0 || a > 2<<20) || !zero && a < 8<<20 {
			t.Errorf("zero free %v: %d bytes allocated", zero, a)
		}
	}
}
