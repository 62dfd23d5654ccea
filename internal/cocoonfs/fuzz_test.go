package cocoonfs

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

// The fuzz targets read the golden images and the test key from the
// reference directory at run time when it is there, and always add small
// images of their own, written under the same key, so that mutations of
// valid, authenticated images are fast to check.

// fuzzShared returns a reference file, or nil when there is none.
func fuzzShared(rel string) []byte {
	d := sharedvec.Dir()
	if d == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(d, rel))
	if err != nil {
		return nil
	}
	return b
}

// fuzzKey is the golden images' key (64 bytes 0x00..0x3f); without the
// reference directory, the same bytes made here.
func fuzzKey() []byte {
	if k := fuzzShared("svsm/vectors/key-00-3f.bin"); len(k) == 64 {
		return k
	}
	k := make([]byte, 64)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// detRand is a deterministic random source for the images the targets write.
type detRand struct{ c *rand.ChaCha8 }

func (r detRand) Read(b []byte) (int, error) { return r.c.Read(b) }

func newDetRand(seed byte) detRand { return detRand{rand.NewChaCha8([32]byte{seed})} }

// writeSmallest writes inodes into the smallest image this package's
// writer fits them in.
func writeSmallest(tb testing.TB, key []byte, l Layout, aux []byte, noAux bool, inodes []Inode) []byte {
	tb.Helper()
	size := uint64(512)
	for range 64 {
		img, err := Write(WriteOptions{Key: key, Layout: l, Salt: []byte{0xdd, 0xee, 0xff}, ImageBytes: size, Inodes: inodes,
			Aux: aux, NoAux: noAux, ZeroFree: true, Rand: newDetRand(byte(len(inodes)))})
		var small *ErrTooSmall
		switch {
		case err == nil:
			return img
		case errors.As(err, &small):
			size = max(small.Need, size+uint64(l.IOBlockSize()))
		default:
			tb.Fatal(err)
		}
	}
	tb.Fatalf("no image size holds the inodes")
	return nil
}

func seqData(n int, seed byte) []byte {
	b := make([]byte, n)
	newDetRand(seed).Read(b)
	return b
}

// fuzzImages are the images the Open targets start from: small ones this
// package writes (the vTPM's two files; one small file; many files, so that
// the inode index has internal nodes and a file needs an extents list; no
// auxiliary metadata) and the reference tool's smallest ones.
func fuzzImages(tb testing.TB, key []byte) [][]byte {
	l128, _ := DefaultLayout(128)
	l256, _ := DefaultLayout(256)
	marker := Inode{Number: 0x100000001, Data: []byte("COCONUT-SVSM")}
	var many []Inode
	for i := range 12 {
		many = append(many, Inode{Number: 0x200000000 | uint64(i*7+1), Flags: uint32(i), Data: seqData(i*13, byte(i))})
	}
	many = append(many, Inode{Number: 0x300000000, Data: seqData(9000, 99)})
	imgs := [][]byte{
		writeSmallest(tb, key, l128, nil, false, []Inode{{Number: 0x100000000, Data: seqData(16384, 1)}, marker}),
		writeSmallest(tb, key, l128, nil, false, []Inode{marker}),
		writeSmallest(tb, key, l256, nil, false, []Inode{marker}),
		writeSmallest(tb, key, l128, nil, true, []Inode{{Number: 16, Data: []byte{}}, marker}),
		writeSmallest(tb, key, l128, nil, false, many),
	}
	for _, f := range []string{"c-empty-aes128-min.img", "d-aes128-min.img", "d-aes256-min.img"} {
		if b := fuzzShared("svsm/cocoonfs/" + f); b != nil {
			imgs = append(imgs, b)
		}
	}
	return imgs
}

// inodeSet identifies the files of an image.
func inodeSet(fs *FS) string {
	var b strings.Builder
	for _, in := range fs.Inodes {
		fmt.Fprintf(&b, "%x/%x/%x;", in.Number, in.Flags, sha256.Sum256(in.Data))
	}
	return b.String()
}

// checkFS asserts what an opened image promises: sorted user inodes with
// valid flags, consistent facts, and that writing the same files under the
// same key, layout, salt, counter and auxiliary metadata and opening the
// result gives them back.
func checkFS(t *testing.T, fs *FS, key []byte) {
	t.Helper()
	if err := fs.Info.Layout.Validate(); err != nil {
		t.Fatalf("opened image with an invalid layout: %v", err)
	}
	for i, in := range fs.Inodes {
		if in.Number < FirstUserInode || in.Flags>>8 != 0 || (i > 0 && fs.Inodes[i-1].Number >= in.Number) {
			t.Fatalf("inode %d: number 0x%x flags 0x%x out of order or reserved", i, in.Number, in.Flags)
		}
		if got, ok := fs.Lookup(in.Number); !ok || got != &fs.Inodes[i] {
			t.Fatalf("Lookup(0x%x) does not find the inode", in.Number)
		}
	}
	ab := uint64(fs.Info.Layout.allocBlockSize())
	if fs.Info.ImageBytes > fs.Info.FileBytes || fs.Info.AllocatedABs*ab > fs.Info.ImageBytes || len(fs.Info.Salt) > 255 {
		t.Fatalf("inconsistent facts: %+v", fs.Info)
	}
	opts := WriteOptions{Key: key, Layout: fs.Info.Layout, Salt: fs.Info.Salt, ImageBytes: fs.Info.ImageBytes, Inodes: fs.Inodes,
		Aux: fs.Info.AuxMetadata, NoAux: fs.Info.AuxMetadata == nil, Counter: &fs.Info.UpdateCounter, ZeroFree: true, Rand: newDetRand(7)}
	img, err := Write(opts)
	var small *ErrTooSmall
	if errors.As(err, &small) {
		opts.ImageBytes = small.Need
		img, err = Write(opts)
	}
	if err != nil {
		if strings.Contains(err.Error(), "auxiliary metadata") {
			return // a reserve the writer cannot place: refused, not misplaced
		}
		t.Fatalf("re-writing the opened files: %v", err)
	}
	back, err := Open(img, key)
	if err != nil {
		t.Fatalf("re-written image does not open: %v", err)
	}
	if back.Info.Layout != fs.Info.Layout || !bytes.Equal(back.Info.Salt, fs.Info.Salt) || back.Info.UpdateCounter != fs.Info.UpdateCounter ||
		!bytes.Equal(back.Info.AuxMetadata, fs.Info.AuxMetadata) || inodeSet(back) != inodeSet(fs) {
		t.Fatal("re-written image opens with other contents")
	}
}

// FuzzOpen opens arbitrary bytes under an arbitrary key: before
// authentication, every input but the seeds must be refused with an error.
func FuzzOpen(f *testing.F) {
	key := fuzzKey()
	wrong := append([]byte(nil), key...)
	wrong[5] ^= 0x40
	for _, img := range fuzzImages(f, key) {
		f.Add(img, key)
		f.Add(img, wrong)
	}
	if b := fuzzShared("svsm/cocoonfs/e-mkfsinfo-header-8M.img"); b != nil {
		f.Add(b[:1024], key)
	}
	f.Add([]byte(MagicFS), []byte{})
	f.Fuzz(func(t *testing.T, img, key []byte) {
		fs, err := Open(img, key)
		if err != nil {
			if fs != nil || err.Error() == "" {
				t.Fatalf("error %q with a filesystem", err)
			}
			if errors.Is(err, ErrNotFormatted) && Detect(img) != KindMkfsInfo {
				t.Fatal("not formatted, but no creation info header")
			}
			return
		}
		if Detect(img) != KindFS {
			t.Fatal("opened an image without the COCOONFS magic")
		}
		checkFS(t, fs, key)
	})
}

// FuzzOpenKnownKey opens mutated images under the key they were written
// with: whatever opens must hold exactly the files of one of the seed
// images (authentication lets nothing else through), and round-trip.
func FuzzOpenKnownKey(f *testing.F) {
	key := fuzzKey()
	known := map[string]bool{}
	for _, img := range fuzzImages(f, key) {
		fs, err := Open(img, key)
		if err != nil {
			f.Fatalf("seed image does not open: %v", err)
		}
		known[inodeSet(fs)] = true
		f.Add(img)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		fs, err := Open(img, key)
		if err != nil {
			if fs != nil {
				t.Fatal("error with a filesystem")
			}
			return
		}
		if !known[inodeSet(fs)] {
			t.Fatalf("a modified image opened with files of no seed image: %d inodes", len(fs.Inodes))
		}
		checkFS(t, fs, key)
	})
}

// FuzzHeaders decodes arbitrary bytes as the plaintext headers an image
// starts with.
func FuzzHeaders(f *testing.F) {
	key := fuzzKey()
	for _, img := range fuzzImages(f, key) {
		f.Add(img[:min(len(img), 1024)])
	}
	if b := fuzzShared("svsm/cocoonfs/e-mkfsinfo-header-8M.img"); b != nil {
		f.Add(b[:1024])
	}
	f.Add([]byte(MagicMkfsInfo))
	f.Fuzz(func(t *testing.T, img []byte) {
		kind := Detect(img)
		switch {
		case bytes.HasPrefix(img, []byte(MagicFS)) != (kind == KindFS),
			bytes.HasPrefix(img, []byte(MagicMkfsInfo)) != (kind == KindMkfsInfo):
			t.Fatalf("Detect says %d", kind)
		}
		if sh, err := decodeStaticHeader(img); err == nil {
			if kind != KindFS || sh.layout.Validate() != nil || len(sh.salt) > 255 {
				t.Fatalf("static header decoded from a %d-kind image: %+v", kind, sh.layout)
			}
			enc := encodeStaticHeader(sh.layout, sh.salt)
			back, err := decodeStaticHeader(enc)
			if err != nil || back.layout != sh.layout || !bytes.Equal(back.salt, sh.salt) {
				t.Fatalf("re-encoded static header decodes to %v, %v", back, err)
			}
		}
		mi, err := decodeMkfsInfoHeader(img)
		if err == nil && (kind != KindMkfsInfo || mi.Layout.Validate() != nil) {
			t.Fatalf("creation info header decoded from a %d-kind image", kind)
		}
		if kind == KindMkfsInfo {
			_, oerr := Open(img, key)
			if (err == nil) != errors.Is(oerr, ErrNotFormatted) {
				t.Fatalf("creation info header: decode %v, Open %v", err, oerr)
			}
		}
	})
}

// FuzzStaticHeaderEncode protects arbitrary layouts and salts: the decoder
// takes back exactly what the encoder wrote, and refuses one changed byte
// of it.
func FuzzStaticHeaderEncode(f *testing.F) {
	for _, s := range []int{128, 192, 256} {
		l, _ := DefaultLayout(s)
		f.Add(l.Encode(), []byte{0xdd, 0xee, 0xff}, uint16(0), byte(0))
		f.Add(l.Encode(), bytes.Repeat([]byte{0}, 255), uint16(200), byte(1))
	}
	f.Fuzz(func(t *testing.T, lb, salt []byte, at uint16, flip byte) {
		l, err := decodeLayout(lb)
		if err != nil {
			return
		}
		if !bytes.Equal(l.Encode(), lb) {
			t.Fatalf("layout %x decodes to %+v, which encodes to %x", lb, l, l.Encode())
		}
		if len(salt) > 255 || l.IOBlockSize() > 64<<10 {
			return // salts are one length byte; IO Blocks that large are slow to fuzz
		}
		enc := encodeStaticHeader(l, salt)
		if Detect(enc) != KindFS {
			t.Fatal("encoded static header not detected")
		}
		sh, err := decodeStaticHeader(enc)
		if err != nil || sh.layout != l || !bytes.Equal(sh.salt, salt) {
			t.Fatalf("encoded static header decodes to %v, %v", sh, err)
		}
		// One changed byte of the protected part (magic and padding
		// aside) is noticed.
		end := staticHeaderLen(l, len(salt))
		if flip == 0 || end <= 8 {
			return
		}
		pos := 8 + int(at)%(end-8)
		enc[pos] ^= flip
		if sh, err := decodeStaticHeader(enc); err == nil && (sh.layout != l || !bytes.Equal(sh.salt, salt)) {
			t.Fatalf("byte %d changed by %02x: decodes to other contents", pos, flip)
		}
	})
}

// FuzzIntegrity protects arbitrary extents with the extent integrity
// scheme: removing the protections gives back the contents, and arbitrary
// bytes are refused or accepted without panicking.
func FuzzIntegrity(f *testing.F) {
	f.Add(byte(0), bytes.Repeat([]byte{0}, 512), byte(8), byte(17))
	f.Add(byte(1), bytes.Repeat([]byte{0xff}, 700), byte(0), byte(0))
	f.Add(byte(2), []byte("COCOONFS"), byte(8), byte(23))
	f.Fuzz(func(t *testing.T, sel byte, data []byte, skip, off byte) {
		l, _ := DefaultLayout(128)
		l.AllocBlock128Log2 = sel % 3
		l.IOBlockAllocBlocksLog2 = (sel / 3) % 4
		// verifyIntegrity on whatever the fuzzer made.
		raw := append([]byte(nil), data...)
		if err := l.verifyIntegrity(raw, int(skip)%16, int(off)%64); err == nil && len(raw) != len(data) {
			t.Fatal("verifyIntegrity changed the length")
		}
		// Round trip: the section (checksum, mask, saved checkpoint bytes)
		// must fit in the masked first 128 bytes.
		s, o := int(skip)%16, int(off)%64
		n := l.checkpoints()
		if s+o+checksumLen+1+n*checksumLen > 128 {
			return
		}
		ext := make([]byte, max(l.IOBlockSize(), len(data)))
		copy(ext, data)
		clear(ext[s+o : s+o+checksumLen+1+n*checksumLen])
		want := append([]byte(nil), ext...)
		l.applyIntegrity(ext, s, o)
		for i := s; i < 128; i++ {
			if ext[i] == 0 {
				t.Fatalf("protected extent has a zero byte at %d", i)
			}
		}
		if err := l.verifyIntegrity(ext, s, o); err != nil || !bytes.Equal(ext, want) {
			t.Fatalf("protected extent does not verify back: %v", err)
		}
	})
}

// FuzzEncodings decodes arbitrary bytes with the format's small
// encodings: LEB128 integers, extents lists, extent and block pointers,
// auxiliary metadata TLVs and the padding of encrypted extents.
func FuzzEncodings(f *testing.F) {
	f.Add(encodeExtentsList([]Extent{{5, 3}, {1, 64}, {1 << 40, 1}}))
	f.Add(append(encodeExtentsList([]Extent{{100, 2}}), DefaultAux()...))
	f.Add(DefaultAux())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x7f})
	f.Add(append(bytes.Repeat([]byte{4}, 4), make([]byte, 16)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, n, err := uleb128(b); err == nil {
			if e := appendUleb128(nil, v); len(e) > n {
				t.Fatalf("uleb128 %x: %d, canonical form %x longer", b[:n], v, e)
			} else if w, m, err := uleb128(e); err != nil || w != v || m != len(e) {
				t.Fatalf("uleb128 %d does not round-trip", v)
			}
		}
		if v, n, err := sleb128(b); err == nil {
			if e := appendSleb128(nil, v); len(e) > n {
				t.Fatalf("sleb128 %x: %d, canonical form %x longer", b[:n], v, e)
			} else if w, m, err := sleb128(e); err != nil || w != v || m != len(e) {
				t.Fatalf("sleb128 %d does not round-trip", v)
			}
		}
		if exts, n, err := decodeExtentsList(b); err == nil {
			if n > len(b) {
				t.Fatalf("extents list consumed %d of %d bytes", n, len(b))
			}
			for _, e := range exts {
				if e.Len == 0 || e.Begin == 0 || e.End() < e.Begin {
					t.Fatalf("extents list decoded %+v", e)
				}
			}
			enc := encodeExtentsList(exts)
			back, m, err := decodeExtentsList(enc)
			if err != nil || m != len(enc) || fmt.Sprint(back) != fmt.Sprint(exts) {
				t.Fatalf("extents list %v does not round-trip: %v %v", exts, back, err)
			}
		}
		if n, err := auxTLVLen(b); err == nil {
			if n < 20 || n > len(b) {
				t.Fatalf("aux TLV length %d of %d bytes", n, len(b))
			}
			if m, err := auxTLVLen(b[:n]); err != nil || m != n {
				t.Fatalf("aux TLV prefix of %d bytes: %d, %v", n, m, err)
			}
		}
		for i := 0; i+8 <= len(b) && i < 64; i += 8 {
			v := le64u(b[i:])
			if e, ind, ok := decodeExtentPtr(v); ok {
				if e.Len == 0 || e.Len > maxExtentPtrBlocks {
					t.Fatalf("extent pointer %x: %+v", v, e)
				}
				if e.Begin != 0 && encodeExtentPtr(e, ind) != v {
					t.Fatalf("extent pointer %x does not round-trip", v)
				}
			} else if v != nilPtr {
				t.Fatalf("extent pointer %x taken for NIL", v)
			}
			if p, ok, err := decodeBlockPtr(v); err == nil && ok && encodeBlockPtr(p) != v {
				t.Fatalf("block pointer %x does not round-trip", v)
			}
		}
		if p, err := unpad(b); err == nil {
			if len(p) >= len(b) || !bytes.HasPrefix(b, p) {
				t.Fatalf("unpad of %d bytes gave %d", len(b), len(p))
			}
		}
	})
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func le64u(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

// fuzzNodeLayouts are the layouts whose inode index nodes FuzzIndexNodes
// decodes: the defaults and one with larger nodes.
func fuzzNodeLayouts() []Layout {
	var ls []Layout
	for _, s := range []int{128, 256} {
		l, _ := DefaultLayout(s)
		ls = append(ls, l)
	}
	big := ls[0]
	big.IndexLeafLog2, big.IndexInternalLog2 = 2, 1
	return append(ls, big)
}

// FuzzIndexNodes decodes arbitrary plaintexts as inode index nodes: what
// decodes is well-formed and re-encodes to a node that decodes the same.
func FuzzIndexNodes(f *testing.F) {
	ls := fuzzNodeLayouts()
	for i, l := range ls {
		leaf := &leafNode{next: encodeBlockPtr(40), entries: []indexEntry{
			{inode: 1, ext: Extent{30, 4}, hasExtent: true}, {inode: 3, ext: Extent{34, 1}, hasExtent: true},
			{inode: 0x100000000, flags: 3, ext: Extent{50, 2}, indirect: true, hasExtent: true}, {inode: 0x100000001}}}
		f.Add(byte(i), encodeLeaf(l, leaf))
		f.Add(byte(i), encodeInternal(l, &internalNode{level: 2, children: []uint64{10, 11, 12}, keys: []uint64{16, 0x100000000}}))
	}
	f.Fuzz(func(t *testing.T, sel byte, data []byte) {
		l := ls[int(sel)%len(ls)]
		b := make([]byte, blockPayloadLen(l.leafNodeSize()))
		copy(b, data)
		if n, err := decodeLeaf(l, b); err == nil {
			encodable := true
			for i, e := range n.entries {
				if e.inode == 0 || e.flags>>8 != 0 || (i > 0 && n.entries[i-1].inode >= e.inode) {
					t.Fatalf("leaf entry %d: %+v", i, e)
				}
				if e.hasExtent && (e.ext.Begin == 0 || e.ext.Begin>>57 != 0) {
					encodable = false // refused later, where the extent is used
				}
			}
			if len(n.entries) > maxLeafEntries(l) {
				t.Fatalf("%d leaf entries", len(n.entries))
			}
			if encodable {
				back, err := decodeLeaf(l, encodeLeaf(l, n))
				if err != nil || fmt.Sprint(back) != fmt.Sprint(n) {
					t.Fatalf("leaf %+v does not round-trip: %+v %v", n, back, err)
				}
			}
		}
		b = make([]byte, blockPayloadLen(l.internalNodeSize()))
		copy(b, data)
		if n, err := decodeInternal(l, b); err == nil {
			if n.level < 2 || n.level > 64 || len(n.keys) == 0 || len(n.children) != len(n.keys)+1 || len(n.keys) > maxInternalEntries(l) {
				t.Fatalf("internal node: level %d, %d keys, %d children", n.level, len(n.keys), len(n.children))
			}
			for i := 1; i < len(n.keys); i++ {
				if n.keys[i-1] >= n.keys[i] {
					t.Fatal("internal node keys not sorted")
				}
			}
			back, err := decodeInternal(l, encodeInternal(l, n))
			if err != nil || fmt.Sprint(back) != fmt.Sprint(n) {
				t.Fatalf("internal node %+v does not round-trip: %+v %v", n, back, err)
			}
		}
	})
}

// resealer re-authenticates modified copies of an image it has opened:
// the entry leaf's preauthentication HMAC, the authentication tree over
// the blocks the (possibly modified) bitmap allocates, and the root HMAC
// over the (possibly modified) mutable header. It handles images whose
// tree is one extent, as the writer makes them.
type resealer struct {
	r          *reader
	chain      Extent // the extents list of the first file that has one, if any
	chainInode uint64
}

func newResealer(tb testing.TB, img, key []byte) *resealer {
	sh, err := decodeStaticHeader(img)
	if err != nil {
		tb.Fatal(err)
	}
	r := &reader{img: img, l: sh.layout, sh: sh, ab: sh.layout.allocBlockSize()}
	r.k = newKeys(r.l, key, sh.salt)
	if err := r.open(); err != nil {
		tb.Fatal(err)
	}
	if len(r.tree) != 1 {
		tb.Fatalf("authentication tree in %d extents", len(r.tree))
	}
	s := &resealer{r: r}
	// Follow the leaves from the entry leaf for a file with an extents list.
	idx := r.cipherFor(InodeIndexRoot, subdomainData)
	for at, ok := r.mh.entryLeaf, true; ok && s.chain.Len == 0; {
		b, err := r.extent(Extent{at, 1 << r.l.IndexLeafLog2})
		if err != nil {
			tb.Fatal(err)
		}
		n, err := decodeLeaf(r.l, decryptBlock(idx, b))
		if err != nil {
			tb.Fatal(err)
		}
		for _, e := range n.entries {
			if e.inode >= FirstUserInode && e.indirect && s.chain.Len == 0 {
				s.chain, s.chainInode = e.ext, e.inode
			}
		}
		if at, ok, err = decodeBlockPtr(n.next); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// seal re-authenticates img in place; it returns false when img's mutable
// header or bitmap no longer say where the tree can cover it.
func (s *resealer) seal(img []byte) bool {
	o := s.r
	l, ab := o.l, uint64(o.ab)
	me := mutableHeaderExtent(l, len(o.sh.salt))
	mh, err := decodeMutableHeader(l, img[me.Begin*ab:])
	if err != nil || mh.imageSize*ab > uint64(len(img)) {
		return false
	}
	t := o.tree[0]
	r := &reader{img: img, l: l, ab: o.ab, k: o.k, sh: o.sh, mh: mh, g: o.g, tree: o.tree, treeSorted: o.treeSorted,
		treeData: img[t.Begin*ab : t.End()*ab], skip: o.skip, headerEnd: o.headerEnd}
	if mh.imageSize < t.Len {
		return false
	}
	r.dataBlocks = (mh.imageSize - t.Len + 1<<r.g.aLog2 - 1) >> r.g.aLog2
	if r.dataBlocks > r.g.maxCovered() {
		return false
	}
	bmCipher := l.newCipher(o.k.derive(InodeAllocBitmap, subdomainData, purposeEncryption))
	fb := uint64(l.bitmapFileBlockSize())
	for _, e := range o.bmExts {
		for off := e.Begin * ab; off+fb <= e.End()*ab; off += fb {
			pt := decryptBlock(bmCipher, img[off:off+fb])
			for i := 0; i+8 <= len(pt); i += 8 {
				r.bitmap = append(r.bitmap, le64u(pt[i:]))
			}
		}
	}
	if uint64(len(r.bitmap))*64 < mh.imageSize {
		return false
	}
	leafABs := uint64(1) << l.IndexLeafLog2
	if mh.entryLeaf >= mh.imageSize || (mh.entryLeaf+leafABs)*ab > uint64(len(img)) {
		return false
	}
	m := o.k.hmac(l.PreauthHMAC, InodeIndexRoot, subdomainData, purposePreauth)
	m.Write(img[mh.entryLeaf*ab : (mh.entryLeaf+leafABs)*ab])
	m.Write(cipherParams(l))
	m.Write([]byte{0, authSubjectIndexNode})
	mh.preauth = m.Sum(nil)
	mh.rootHMAC = r.sealTree(o.bmExts)
	copy(img[me.Begin*ab:], mh.encode(l))
	return true
}

// patchEncrypted replaces plaintext bytes of an encrypted block (IV, CBC
// payload) at off, re-encrypting it under the same IV.
func patchEncrypted(c cipher.Block, b []byte, off int, patch []byte) {
	pt := decryptBlock(c, b)
	if len(pt) == 0 {
		return
	}
	for i, v := range patch {
		pt[(off+i)%len(pt)] = v
	}
	cipher.NewCBCEncrypter(c, b[:ivLen]).CryptBlocks(b[ivLen:ivLen+len(pt)], pt)
}

// FuzzOpenResealed changes the plaintext of an image's structures (an
// inode index node, the allocation bitmap, the mutable header's fields)
// or its authenticated bytes, authenticates the result again under the
// key, and opens it: the reader then parses what the fuzzer wrote, past
// every authentication check. Whatever opens must round-trip.
func FuzzOpenResealed(f *testing.F) {
	key := fuzzKey()
	l128, _ := DefaultLayout(128)
	l256, _ := DefaultLayout(256)
	marker := Inode{Number: 0x100000001, Data: []byte("COCONUT-SVSM")}
	var many []Inode
	for i := range 12 {
		many = append(many, Inode{Number: 0x200000000 | uint64(i*7+1), Data: seqData(i*13, byte(i))})
	}
	many = append(many, Inode{Number: 0x300000000, Data: seqData(9000, 99)})
	imgs := [][]byte{
		writeSmallest(f, key, l128, nil, false, []Inode{marker, {Number: 0x100000000, Data: seqData(300, 1)}}),
		writeSmallest(f, key, l256, nil, true, []Inode{marker}),
		writeSmallest(f, key, l128, nil, false, many),
	}
	var seals []*resealer
	for _, img := range imgs {
		seals = append(seals, newResealer(f, img, key))
	}
	for i := range imgs {
		for what := range byte(7) {
			f.Add(byte(i), what, uint32(0), []byte{})
			f.Add(byte(i), what, uint32(8+what), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		}
	}
	f.Fuzz(func(t *testing.T, sel, what byte, off uint32, patch []byte) {
		if len(patch) > 64 {
			return
		}
		s := seals[int(sel)%len(seals)]
		o := s.r
		img := append([]byte(nil), o.img...)
		l, ab := o.l, uint64(o.ab)
		idx := o.cipherFor(InodeIndexRoot, subdomainData)
		switch what % 7 {
		case 0: // the entry leaf
			e := o.mh.entryLeaf * ab
			patchEncrypted(idx, img[e:e+uint64(l.leafNodeSize())], int(off), patch)
		case 1: // the index root (an internal node when there are several leaves)
			e := o.indexRoot.ext
			patchEncrypted(idx, img[e.Begin*ab:e.End()*ab], int(off), patch)
		case 2: // the allocation bitmap
			fb := uint64(l.bitmapFileBlockSize())
			bm := o.bmExts[0]
			n := bm.Len * ab / fb
			at := bm.Begin*ab + uint64(off/256)%n*fb
			patchEncrypted(l.newCipher(o.k.derive(InodeAllocBitmap, subdomainData, purposeEncryption)), img[at:at+fb], int(off%256), patch)
		case 3: // the mutable header's fields: aux heads, entry leaf, size
			me := mutableHeaderExtent(l, len(o.sh.salt)).Begin * ab
			n := uint64(mutableHeaderLen(l))
			for i, v := range patch {
				p := (uint64(off) + uint64(i)) % n
				if p < 16 || p >= n-16 {
					img[me+p] = v
				}
			}
		case 6: // a file's extents list (one extent: IV, padding, CBC ciphertext)
			if s.chain.Len == 0 {
				return
			}
			ext := img[s.chain.Begin*ab : s.chain.End()*ab]
			n := chainedPayloadLen(len(ext), 0, 0, true)
			pt := make([]byte, n)
			ct := ext[len(ext)-n:]
			c := o.cipherFor(s.chainInode, subdomainExtentsList)
			cipher.NewCBCDecrypter(c, ext[:ivLen]).CryptBlocks(pt, ct)
			for i, v := range patch {
				pt[(int(off)+i)%n] = v
			}
			cipher.NewCBCEncrypter(c, ext[:ivLen]).CryptBlocks(ct, pt)
		default: // any byte after the mutable header (files, lists, aux)
			for i, v := range patch {
				p := o.headerEnd*ab + (uint64(off)+uint64(i))%(uint64(len(img))-o.headerEnd*ab)
				img[p] = v
			}
		}
		if !s.seal(img) {
			return
		}
		fs, err := Open(img, key)
		if err != nil {
			if len(patch) == 0 {
				t.Fatalf("unchanged image, sealed again, does not open: %v", err)
			}
			if fs != nil || err.Error() == "" {
				t.Fatal("error with a filesystem")
			}
			return
		}
		checkFS(t, fs, key)
	})
}

// FuzzWriteOpen writes images of arbitrary layouts and files and opens
// them: the reader must take back exactly what the writer wrote, whatever
// the block sizes, hashes, key size, index shape and extents lists.
func FuzzWriteOpen(f *testing.F) {
	for _, s := range []int{128, 192, 256} {
		l, _ := DefaultLayout(s)
		f.Add(l.Encode(), []byte{12, 0, 200, 3}, uint64(0x100000000), false)
		big := l
		big.AllocBlock128Log2, big.IOBlockAllocBlocksLog2, big.AuthTreeDataBlockLog2, big.IndexLeafLog2, big.IndexInternalLog2 = 1, 1, 0, 1, 2
		f.Add(big.Encode(), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 80}, uint64(16), true)
	}
	key := fuzzKey()
	f.Fuzz(func(t *testing.T, lb, sizes []byte, first uint64, noAux bool) {
		l, err := decodeLayout(lb)
		if err != nil || l.IOBlockSize() > 4096 || l.leafNodeSize() > 4096 || l.internalNodeSize() > 4096 || len(sizes) > 24 {
			return // keep images small: a few kilobytes to some hundred
		}
		var inodes []Inode
		for i, n := range sizes {
			num := first + uint64(i)*0x1_0000_0001
			if num < FirstUserInode || num < first {
				return
			}
			inodes = append(inodes, Inode{Number: num, Flags: uint32(n & 7), Data: seqData(int(n)*int(n)/4, byte(i))})
		}
		opts := WriteOptions{Key: key, Layout: l, Salt: []byte{1, 2, 3}, ImageBytes: 512, Inodes: inodes, NoAux: noAux, ZeroFree: true, Rand: newDetRand(3)}
		var img []byte
		for range 8 {
			img, err = Write(opts)
			var small *ErrTooSmall
			if !errors.As(err, &small) {
				break
			}
			if small.Need > 1<<20 {
				return
			}
			opts.ImageBytes = max(small.Need, opts.ImageBytes+uint64(l.IOBlockSize()))
		}
		if err != nil {
			return // a layout the writer cannot fill (tree nodes too small for their digests)
		}
		fs, err := Open(img, key)
		if err != nil {
			t.Fatalf("written image (%d bytes, layout %x) does not open: %v", len(img), l.Encode(), err)
		}
		if fs.Info.Layout != l || len(fs.Inodes) != len(inodes) {
			t.Fatalf("written image opens with layout %+v and %d inodes", fs.Info.Layout, len(fs.Inodes))
		}
		for i, in := range inodes {
			got := fs.Inodes[i]
			if got.Number != in.Number || got.Flags != in.Flags || !bytes.Equal(got.Data, in.Data) {
				t.Fatalf("inode 0x%x differs", in.Number)
			}
		}
	})
}
