package cocoonfs

import (
	"math/rand/v2"
	"testing"
	"time"
)

// Randomly damaged images are refused quickly: the reader never hangs or
// panics on them.
func TestDamagedImagesNeverHang(t *testing.T) {
	key := []byte("fuzz key material")
	l, _ := DefaultLayout(128)
	img, _ := Write(WriteOptions{Key: key, Layout: l, ImageBytes: 64 << 10, ZeroFree: true,
		Inodes: []Inode{{Number: 0x100000000, Data: make([]byte, 3000)}, {Number: 0x100000001, Data: []byte("COCONUT-SVSM")}}})
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 1500; i++ {
		c := append([]byte(nil), img...)
		n := 1 + rng.IntN(4)
		var offs []int
		for j := 0; j < n; j++ {
			o := rng.IntN(len(c))
			if rng.IntN(2) == 0 {
				o = rng.IntN(600)
			}
			c[o] = byte(rng.IntN(256))
			offs = append(offs, o)
		}
		if rng.IntN(10) == 0 {
			c = c[:rng.IntN(len(c))]
		}
		done := make(chan struct{})
		go func() { Open(c, key); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("hang at mutation %d offsets %v len %d", i, offs, len(c))
		}
	}
}
