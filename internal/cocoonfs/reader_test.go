package cocoonfs

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

func goldenKey(t *testing.T) []byte { return sharedvec.Read(t, "svsm/vectors/key-00-3f.bin") }

func TestGoldenImagesRead(t *testing.T) {
	nv := sharedvec.Read(t, "tpm/golden/upstream/a0-manufactured-only.NVChip")
	for _, f := range []string{"a-aes128-8M-n.img", "b-aes256-8M-n.img", "d-aes128-min.img", "d-aes256-min.img"} {
		fs, err := Open(sharedvec.Read(t, "svsm/cocoonfs/"+f), goldenKey(t))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(fs.Inodes) != 2 {
			t.Fatalf("%s: %d inodes", f, len(fs.Inodes))
		}
		if in, ok := fs.Lookup(0x100000000); !ok || string(in.Data) != string(nv) || in.Flags != 0 {
			t.Errorf("%s: NVChip differs", f)
		}
		if in, ok := fs.Lookup(0x100000001); !ok || string(in.Data) != "COCONUT-SVSM" {
			t.Errorf("%s: marker differs", f)
		}
	}
	for _, f := range []string{"c-empty-aes128-8M-n.img", "c-empty-aes128-min.img"} {
		fs, err := Open(sharedvec.Read(t, "svsm/cocoonfs/"+f), goldenKey(t))
		if err != nil || len(fs.Inodes) != 0 {
			t.Fatalf("%s: %v, %d inodes", f, err, len(fs.Inodes))
		}
	}
	_, err := Open(sharedvec.Read(t, "svsm/cocoonfs/e-mkfsinfo-header-8M.img"), goldenKey(t))
	if !errors.Is(err, ErrNotFormatted) {
		t.Errorf("mkfsinfo image: %v", err)
	}
}

func TestGoldenChurn(t *testing.T) {
	fs, err := Open(sharedvec.Read(t, "svsm/cocoonfs/f-churn-aes128-8M-n.img"), goldenKey(t))
	if err != nil {
		t.Fatal(err)
	}
	fl, err := os.Open(sharedvec.Path(t, "svsm/cocoonfs/f-churn-files.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	s := bufio.NewScanner(fl)
	n := 0
	for s.Scan() {
		f := strings.Fields(s.Text())
		ino, _ := strconv.ParseUint(f[0], 10, 64)
		size, _ := strconv.Atoi(f[2])
		if n >= len(fs.Inodes) || fs.Inodes[n].Number != ino {
			t.Fatalf("file %d: want inode %d", n, ino)
		}
		d := fs.Inodes[n].Data
		sum := sha256.Sum256(d)
		if len(d) != size || hex.EncodeToString(sum[:]) != f[3] {
			t.Errorf("inode %d: %d bytes, sha256 %x", ino, len(d), sum)
		}
		n++
	}
	if n != 29 || len(fs.Inodes) != 29 {
		t.Errorf("%d listed, %d read", n, len(fs.Inodes))
	}
	if fs.Info.IndexLevels < 2 {
		t.Errorf("churn image has a %d-level index, expected a multi-level one", fs.Info.IndexLevels)
	}
}

// An image whose journal log head holds a pending transaction is refused,
// never read past.
func TestActiveJournalRefused(t *testing.T) {
	img := append([]byte(nil), sharedvec.Read(t, "svsm/cocoonfs/a-aes128-8M-n.img")...)
	sh, _ := decodeStaticHeader(img)
	jh := journalHeadExtent(sh.layout, len(sh.salt))
	ext := make([]byte, jh.Len*128)
	copy(ext, "CCFSJRNL")
	for i := 8 + sh.layout.integrityLen(); i < len(ext); i++ {
		ext[i] = byte(i)
	}
	sh.layout.applyIntegrity(ext, 8, 0)
	copy(img[jh.Begin*128:], ext)
	if _, err := Open(img, goldenKey(t)); !errors.Is(err, ErrJournalActive) {
		t.Fatalf("active journal: %v", err)
	}
	// A torn journal head (integrity fails) is inactive: the image opens.
	img[jh.Begin*128+100] ^= 0xff
	if _, err := Open(img, goldenKey(t)); err != nil {
		t.Fatalf("torn journal head: %v", err)
	}
}
