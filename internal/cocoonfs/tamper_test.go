package cocoonfs

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

// authenticatedBytes lists byte offsets whose change the reader must
// notice: the static header with its padding, the mutable header's fields,
// the authentication tree and every allocated, authenticated block.
func authenticatedBytes(t *testing.T, img, key []byte) []int {
	sh, err := decodeStaticHeader(img)
	if err != nil {
		t.Fatal(err)
	}
	r := &reader{img: img, l: sh.layout, sh: sh, ab: sh.layout.allocBlockSize()}
	r.k = newKeys(r.l, key, sh.salt)
	if err := r.open(); err != nil {
		t.Fatal(err)
	}
	var offs []int
	me := mutableHeaderExtent(r.l, len(sh.salt))
	for i := 0; i < int(me.Begin)*r.ab; i++ {
		offs = append(offs, i)
	}
	for i := 16; i < mutableHeaderLen(r.l); i++ { // the aux pointers are checked by following them
		offs = append(offs, int(me.Begin)*r.ab+i)
	}
	for _, e := range r.tree {
		for i := e.Begin * uint64(r.ab); i < e.End()*uint64(r.ab); i++ {
			offs = append(offs, int(i))
		}
	}
	for p := r.headerEnd; p < r.mh.imageSize; p++ {
		if r.isAllocated(p) && !r.inSkip(p) {
			for i := 0; i < r.ab; i++ {
				offs = append(offs, int(p)*r.ab+i)
			}
		}
	}
	return offs
}

func TestTamperedImagesRefused(t *testing.T) {
	key := goldenKey(t)
	for _, f := range []string{"a-aes128-8M-n.img", "d-aes256-min.img", "f-churn-aes128-8M-n.img"} {
		img := sharedvec.Read(t, "svsm/cocoonfs/"+f)
		offs := authenticatedBytes(t, img, key)
		rng := rand.New(rand.NewPCG(1, uint64(len(offs))))
		for i := 0; i < 60; i++ {
			off := offs[rng.IntN(len(offs))]
			c := append([]byte(nil), img...)
			c[off] ^= byte(1 + rng.IntN(255))
			if _, err := Open(c, key); err == nil {
				t.Errorf("%s: flipped byte at offset %d not noticed", f, off)
			}
		}
		for _, n := range []int{len(img) - 512, len(img) / 2, 4096, 100} {
			if _, err := Open(img[:n], key); err == nil {
				t.Errorf("%s: truncated to %d bytes, still opened", f, n)
			}
		}
		wrong := append([]byte(nil), key...)
		wrong[0] ^= 1
		if _, err := Open(img, wrong); !errors.Is(err, ErrWrongKey) {
			t.Errorf("%s: wrong key: %v", f, err)
		}
	}
}

// Pointers from an authenticated inode index to blocks beyond the
// filesystem's end are refused with an error (the index root, a file's
// extent), not looked up in the allocation bitmap past its end.
func TestIndexPointersBeyondImage(t *testing.T) {
	key := fuzzKey()
	l, _ := DefaultLayout(128)
	img := writeSmallest(t, key, l, nil, false, []Inode{{Number: 0x100000000, Data: seqData(300, 1)}})
	s := newResealer(t, img, key)
	for _, entry := range []int{2, 3} { // inode 3 (the index root), inode 0x100000000
		c := append([]byte(nil), img...)
		e := s.r.mh.entryLeaf * uint64(s.r.ab)
		ptr := le64(encodeExtentPtr(Extent{Begin: 1 << 40, Len: 1}, false))
		patchEncrypted(s.r.cipherFor(InodeIndexRoot, subdomainData), c[e:e+uint64(l.leafNodeSize())], 8+8*entry, ptr)
		if !s.seal(c) {
			t.Fatal("cannot seal the changed image")
		}
		if _, err := Open(c, key); err == nil {
			t.Errorf("entry %d pointing beyond the image: opened", entry)
		}
	}
}
