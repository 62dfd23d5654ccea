package cocoonfs

import (
	"bytes"
	"crypto/rand"
	"testing"
)

func testInodes(t *testing.T) []Inode {
	nv := make([]byte, 16384)
	rand.Read(nv)
	return []Inode{{Number: 0x100000000, Data: nv}, {Number: 0x100000001, Data: []byte("COCONUT-SVSM")}}
}

func TestWriteReadBack(t *testing.T) {
	key := make([]byte, 64)
	rand.Read(key)
	for _, strength := range []int{128, 192, 256} {
		l, _ := DefaultLayout(strength)
		for _, size := range []uint64{26112, 32768, 8 << 20} {
			in := testInodes(t)
			img, err := Write(WriteOptions{Key: key, Layout: l, ImageBytes: size, Inodes: in})
			if err != nil {
				if _, small := err.(*ErrTooSmall); small && size < 32768 {
					continue
				}
				t.Fatalf("strength %d size %d: %v", strength, size, err)
			}
			fs, err := Open(img, key)
			if err != nil {
				t.Fatalf("strength %d size %d: reopen: %v", strength, size, err)
			}
			for _, want := range in {
				got, ok := fs.Lookup(want.Number)
				if !ok || !bytes.Equal(got.Data, want.Data) {
					t.Errorf("strength %d size %d: inode %x differs", strength, size, want.Number)
				}
			}
		}
	}
}
