package container

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkCocoonUpdate is rotate-key (and, with a change, install-ekcert)
// on a CocoonFS image: authenticate, rewrite, prove, rename.
func BenchmarkCocoonUpdate(b *testing.B) {
	c, _ := Get("cocoonfs")
	for _, size := range []int64{8 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "s.img")
			k1, k2 := randBytes(64), randBytes(64)
			if err := Create(c, p, k1, randBytes(16384), CreateOptions{Size: size}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Update(p, k1, k2, nil); err != nil {
					b.Fatal(err)
				}
				k1, k2 = k2, k1
			}
		})
	}
}
