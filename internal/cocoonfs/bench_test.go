package cocoonfs

import (
	"crypto/rand"
	"fmt"
	"testing"
)

func benchImage(b *testing.B, size uint64, zero bool) ([]byte, []byte) {
	key := make([]byte, 64)
	rand.Read(key)
	nv := make([]byte, 16384)
	rand.Read(nv)
	l, _ := DefaultLayout(128)
	img, err := Write(WriteOptions{Key: key, Layout: l, ImageBytes: size, ZeroFree: zero,
		Inodes: []Inode{{Number: 0x100000000, Data: nv}, {Number: 0x100000001, Data: []byte("COCONUT-SVSM")}}})
	if err != nil {
		b.Fatal(err)
	}
	return img, key
}

// BenchmarkWrite formats an image holding the two vTPM files.
func BenchmarkWrite(b *testing.B) {
	for _, size := range []uint64{8 << 20, 64 << 20} {
		for _, zero := range []bool{false, true} {
			b.Run(fmt.Sprintf("%dMiB/zerofree=%v", size>>20, zero), func(b *testing.B) {
				b.SetBytes(int64(size))
				for i := 0; i < b.N; i++ {
					benchImage(b, size, zero)
				}
			})
		}
	}
}

// BenchmarkOpen authenticates a whole image and reads its files.
func BenchmarkOpen(b *testing.B) {
	for _, size := range []uint64{8 << 20, 64 << 20} {
		img, key := benchImage(b, size, false)
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				if _, err := Open(img, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
