package cocoonfs

import (
	"bytes"
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sort"
)

// Inode is one file of a CocoonFS image.
type Inode struct {
	Number uint64
	Flags  uint32
	Data   []byte
}

// Info describes an opened image.
type Info struct {
	Layout         Layout
	Salt           []byte
	ImageBytes     uint64 // the filesystem's size (mutable header)
	FileBytes      uint64 // the image file's size
	AuthTreeNodes  uint64
	AuthTreeLevels int
	IndexLevels    int
	AllocatedABs   uint64
	UpdateCounter  [16]byte // decrypted filesystem update counter
	AuxMetadata    []byte   // auxiliary filesystem metadata (plaintext TLV), nil if none
}

// FS is an opened, fully authenticated CocoonFS image.
type FS struct {
	Info   Info
	Inodes []Inode // sorted by number, reserved inodes (< 16) excluded
}

// Lookup returns the inode with the given number.
func (f *FS) Lookup(n uint64) (*Inode, bool) {
	i := sort.Search(len(f.Inodes), func(i int) bool { return f.Inodes[i].Number >= n })
	if i < len(f.Inodes) && f.Inodes[i].Number == n {
		return &f.Inodes[i], true
	}
	return nil, false
}

// Kind tells what header an image starts with.
type Kind int

const (
	KindUnknown Kind = iota
	KindFS
	KindMkfsInfo
)

// Detect tells a CocoonFS image (or creation info header) by its
// plaintext magic.
func Detect(head []byte) Kind {
	switch {
	case len(head) >= 8 && string(head[:8]) == MagicFS:
		return KindFS
	case len(head) >= 8 && string(head[:8]) == MagicMkfsInfo:
		return KindMkfsInfo
	}
	return KindUnknown
}

// ErrJournalActive reports an image with a pending journal transaction.
var ErrJournalActive = errors.New("the filesystem journal holds a pending transaction (the SVSM stopped in the middle of an update); boot the VM once so that the SVSM replays it, then try again")

// ErrWrongKey reports an image that does not open with the given key.
var ErrWrongKey = errors.New("does not open with this key (authentication failed): wrong key, or the image was modified")

type reader struct {
	img        []byte
	l          Layout
	ab         int
	k          *keys
	sh         *staticHeader
	mh         *mutableHeader
	g          treeGeom
	tree       []Extent // authentication tree extents, in list order
	treeSorted []Extent // the same, by physical position
	treeData   []byte
	bmExts     []Extent // allocation bitmap extents
	bitmap     []uint64
	skip       []Extent // allocated but digested as unallocated: journal head, aux extents
	headerEnd  uint64
	dataBlocks uint64
	auxPayload []byte
	dataMAC    hash.Hash  // keyed data block HMAC, reset before each use
	indexRoot  indexEntry // inode 3, from the entry leaf
}

func (r *reader) extent(e Extent) ([]byte, error) {
	if e.Len == 0 || e.End() > uint64(len(r.img)/r.ab) || e.End() > r.mh.imageSize || e.End() < e.Begin {
		return nil, fmt.Errorf("extent at block %d+%d lies outside the image", e.Begin, e.Len)
	}
	return r.img[e.Begin*uint64(r.ab) : e.End()*uint64(r.ab)], nil
}

// Open authenticates and decodes a whole image held in memory.
func Open(img []byte, key []byte) (*FS, error) {
	switch Detect(img) {
	case KindMkfsInfo:
		if _, err := decodeMkfsInfoHeader(img); err != nil {
			return nil, fmt.Errorf("CocoonFS creation info header: %w", err)
		}
		return nil, ErrNotFormatted
	case KindUnknown:
		return nil, errors.New("not a CocoonFS image (no COCOONFS or CCFSMKFS magic)")
	}
	sh, err := decodeStaticHeader(img)
	if err != nil {
		return nil, fmt.Errorf("CocoonFS static header: %w", err)
	}
	r := &reader{img: img, l: sh.layout, sh: sh, ab: sh.layout.allocBlockSize()}
	r.k = newKeys(r.l, key, sh.salt)
	if err := r.open(); err != nil {
		return nil, err
	}
	return r.fs()
}

func (r *reader) open() error {
	l := r.l
	me := mutableHeaderExtent(l, len(r.sh.salt))
	if uint64(len(r.img)) < me.End()*uint64(r.ab) {
		return errors.New("image truncated: no mutable header")
	}
	jh := journalHeadExtent(l, len(r.sh.salt))
	if uint64(len(r.img)) < jh.End()*uint64(r.ab) {
		return errors.New("image truncated: no journal log head")
	}
	if j := r.img[jh.Begin*uint64(r.ab) : jh.End()*uint64(r.ab)]; string(j[:8]) == "CCFSJRNL" {
		c := append([]byte(nil), j...)
		if l.verifyIntegrity(c, 8, 0) == nil {
			return ErrJournalActive
		}
	}
	mh, err := decodeMutableHeader(l, r.img[me.Begin*uint64(r.ab):])
	if err != nil {
		return err
	}
	r.mh = mh
	r.headerEnd = me.End()
	if uint64(len(r.img)) < mh.imageSize*uint64(r.ab) {
		return fmt.Errorf("image truncated: %d bytes, the filesystem is %d bytes", len(r.img), mh.imageSize*uint64(r.ab))
	}
	r.skip = append(r.skip, jh)

	// Entry leaf: preauthenticate, then decrypt.
	leafBytes, err := r.extent(Extent{mh.entryLeaf, 1 << l.IndexLeafLog2})
	if err != nil {
		return err
	}
	m := r.k.hmac(l.PreauthHMAC, InodeIndexRoot, subdomainData, purposePreauth)
	m.Write(leafBytes)
	m.Write(cipherParams(l))
	m.Write([]byte{0, authSubjectIndexNode})
	if !hmac.Equal(m.Sum(nil), mh.preauth) {
		return ErrWrongKey
	}
	entry, err := decodeLeaf(l, decryptBlock(r.cipherFor(InodeIndexRoot, subdomainData), leafBytes))
	if err != nil {
		return fmt.Errorf("inode index entry leaf: %w", err)
	}
	special := map[uint64]indexEntry{}
	for _, e := range entry.entries {
		if e.inode <= InodeIndexRoot {
			special[e.inode] = e
		}
	}
	for _, n := range []uint64{InodeAuthTree, InodeAllocBitmap, InodeIndexRoot} {
		if _, ok := special[n]; !ok {
			return fmt.Errorf("inode index entry leaf lacks inode %d", n)
		}
	}
	if r.indexRoot = special[InodeIndexRoot]; r.indexRoot.indirect {
		return errors.New("inode index root must be a direct extent")
	}
	// Authentication tree and bitmap extents (inline authenticated lists).
	r.tree, err = r.specialExtents(special[InodeAuthTree])
	if err != nil {
		return fmt.Errorf("authentication tree extents: %w", err)
	}
	bmExts, err := r.specialExtents(special[InodeAllocBitmap])
	if err != nil {
		return fmt.Errorf("allocation bitmap extents: %w", err)
	}
	r.bmExts = bmExts
	r.treeSorted = append([]Extent(nil), r.tree...)
	sort.Slice(r.treeSorted, func(i, j int) bool { return r.treeSorted[i].Begin < r.treeSorted[j].Begin })
	for i := 1; i < len(r.treeSorted); i++ {
		if r.treeSorted[i].Begin < r.treeSorted[i-1].End() {
			return errors.New("authentication tree extents overlap")
		}
	}
	var treeABs uint64
	align := uint64(1) << l.ioAlignLog2()
	for _, e := range r.tree {
		if e.Begin%align != 0 || e.End()%align != 0 {
			return errors.New("authentication tree extents are not aligned")
		}
		treeABs += e.Len
		b, err := r.extent(e)
		if err != nil {
			return err
		}
		r.treeData = append(r.treeData, b...)
	}
	r.g, err = newTreeGeom(l, treeABs>>(uint(l.AuthTreeNodeIOBlocksLog2)+uint(l.IOBlockAllocBlocksLog2)))
	if err != nil {
		return err
	}
	r.dataBlocks = (mh.imageSize - treeABs + 1<<r.g.aLog2 - 1) >> r.g.aLog2
	if r.dataBlocks > r.g.maxCovered() {
		return errors.New("authentication tree too small for the image")
	}
	if err := r.verifyTreeNodes(bmExts); err != nil {
		return err
	}
	// Allocation bitmap: its data blocks are fully allocated, so they can be
	// authenticated before the bitmap is known.
	var bm []byte
	for _, e := range bmExts {
		if e.Begin%(1<<r.g.aLog2) != 0 || e.Len%(1<<r.g.aLog2) != 0 || e.Len%(1<<l.BitmapFileBlockLog2) != 0 {
			return errors.New("allocation bitmap extents are not aligned")
		}
		for p := e.Begin; p < e.End(); p += 1 << r.g.aLog2 {
			if err := r.authDataBlock(r.dataOfPhysAB(p)>>r.g.aLog2, true); err != nil {
				return fmt.Errorf("allocation bitmap: %w", err)
			}
		}
		b, _ := r.extent(e)
		bm = append(bm, b...)
	}
	bmCipher := l.newCipher(r.k.derive(InodeAllocBitmap, subdomainData, purposeEncryption))
	fb := l.bitmapFileBlockSize()
	for off := 0; off+fb <= len(bm); off += fb {
		pt := decryptBlock(bmCipher, bm[off:off+fb])
		for i := 0; i+8 <= len(pt); i += 8 {
			r.bitmap = append(r.bitmap, binary.LittleEndian.Uint64(pt[i:]))
		}
	}
	if uint64(len(r.bitmap))*64 < mh.imageSize {
		return errors.New("allocation bitmap too short for the image")
	}
	// Auxiliary metadata extents are digested as unallocated.
	if err := r.readAux(); err != nil {
		return fmt.Errorf("auxiliary filesystem metadata: %w", err)
	}
	// Authenticate every data block of the image.
	for db := uint64(0); db < r.dataBlocks; db++ {
		if err := r.authDataBlock(db, false); err != nil {
			return err
		}
	}
	return nil
}

// isAllocated tells the bitmap's view of an Allocation Block; blocks
// beyond the filesystem's end are not allocated (the bitmap covers the
// image size, and pointers from the index may point anywhere).
func (r *reader) isAllocated(p uint64) bool {
	return p < r.mh.imageSize && r.bitmap[p/64]>>(p%64)&1 != 0
}

// physOfDataAB maps an Allocation Block of the data block index domain to
// its physical location, skipping the authentication tree's extents.
func (r *reader) physOfDataAB(d uint64) uint64 {
	p := d
	for _, e := range r.treeSorted {
		if e.Begin <= p {
			p += e.Len
		}
	}
	return p
}

func (r *reader) dataOfPhysAB(p uint64) uint64 {
	d := p
	for _, e := range r.treeSorted {
		if e.End() <= p {
			d -= e.Len
		}
	}
	return d
}

func (r *reader) inSkip(p uint64) bool {
	for _, e := range r.skip {
		if e.Begin <= p && p < e.End() {
			return true
		}
	}
	return false
}

func (r *reader) dataBlockDigest(db uint64, allAllocated bool) []byte {
	if r.dataMAC == nil {
		r.dataMAC = r.k.hmac(r.l.AuthTreeDataHMAC, InodeAuthTree, 0, purposeAuthData)
	}
	m := r.dataMAC
	m.Reset()
	var word uint64
	n := uint64(1) << r.g.aLog2
	for i := uint64(0); i < n; i++ {
		p := r.physOfDataAB(db<<r.g.aLog2 + i)
		if p >= r.mh.imageSize || p < r.headerEnd || r.inSkip(p) {
			continue
		}
		if !allAllocated && !r.isAllocated(p) {
			continue
		}
		m.Write(r.img[p*uint64(r.ab) : (p+1)*uint64(r.ab)])
		word |= 1 << i
	}
	m.Write(le64(word))
	m.Write(le64(db))
	m.Write([]byte{0, authSubjectTreeDataBlock})
	return m.Sum(nil)
}

// authDataBlock checks data block db against its leaf digest; with
// allAllocated, every Allocation Block in it counts as allocated (the
// bitmap's own blocks, before the bitmap is known).
func (r *reader) authDataBlock(db uint64, allAllocated bool) error {
	leaf := r.g.nodeAt(db, 0)
	off := int(leaf) << (r.g.nodeABLog2) * r.ab
	i := int(db & (1<<r.g.dLog2 - 1))
	want := r.treeData[off+i*r.g.dataDigest : off+(i+1)*r.g.dataDigest]
	if !hmac.Equal(r.dataBlockDigest(db, allAllocated), want) {
		p := r.physOfDataAB(db << r.g.aLog2)
		return fmt.Errorf("data at byte offset %d does not authenticate (damaged or modified image)", p*uint64(r.ab))
	}
	return nil
}

// verifyTreeNodes checks the root HMAC and every node digest down to the
// leaves, and that entries beyond the image are zero.
func (r *reader) verifyTreeNodes(bmExts []Extent) error {
	g := r.g
	nodeSize := r.ab << g.nodeABLog2
	node := func(idx uint64) ([]byte, error) {
		if idx >= g.nodeCount {
			return nil, errors.New("authentication tree node out of range")
		}
		return r.treeData[int(idx)*nodeSize : int(idx+1)*nodeSize], nil
	}
	entries := func(b []byte, level int) [][]byte {
		n, sz := 1<<g.kLog2, g.nodeDigest
		if level == 0 {
			n, sz = 1<<g.dLog2, g.dataDigest
		}
		out := make([][]byte, n)
		for i := range out {
			out[i] = b[i*sz : (i+1)*sz]
		}
		return out
	}
	var walk func(idx uint64, level int, first uint64) error
	walk = func(idx uint64, level int, first uint64) error {
		b, err := node(idx)
		if err != nil {
			return err
		}
		es := entries(b, level)
		if level == 0 {
			for i, e := range es {
				if first+uint64(i) >= r.dataBlocks && !allZero(e) {
					return errors.New("authentication tree: digest beyond the image end is not zero")
				}
			}
			return nil
		}
		span := uint64(1) << g.coverLog2(level-1)
		for i, e := range es {
			cf := first + uint64(i)*span
			if cf >= r.dataBlocks {
				if !allZero(e) {
					return errors.New("authentication tree: digest beyond the image end is not zero")
				}
				continue
			}
			ci := g.nodeAt(cf, level-1)
			cb, err := node(ci)
			if err != nil {
				return err
			}
			h := mustHash(r.l.AuthTreeNodeHash).New()
			for _, ce := range entries(cb, level-1) {
				h.Write(ce)
			}
			h.Write(le64(g.lastEntryBegin(cf, level-1)))
			h.Write([]byte{0, authSubjectTreeDescendant})
			if !bytes.Equal(h.Sum(nil), e) {
				return errors.New("authentication tree node does not authenticate (damaged or modified image)")
			}
			if err := walk(ci, level-1, cf); err != nil {
				return err
			}
		}
		return nil
	}
	root, err := node(0)
	if err != nil {
		return err
	}
	m := r.k.hmac(r.l.AuthTreeRootHMAC, InodeAuthTree, 0, purposeAuthRoot)
	for _, e := range entries(root, g.levels-1) {
		m.Write(e)
	}
	m.Write(le64(g.lastEntryBegin(0, g.levels-1)))
	m.Write(r.mh.counter)
	m.Write(imageContext(r.k, r.mh, r.tree, bmExts))
	m.Write([]byte{0, authSubjectTreeRoot})
	if !hmac.Equal(m.Sum(nil), r.mh.rootHMAC) {
		return ErrWrongKey
	}
	return walk(0, g.levels-1, 0)
}

func imageContext(k *keys, mh *mutableHeader, tree, bm []Extent) []byte {
	m := k.hmac(k.l.AuthTreeRootHMAC, InodeAuthTree, 0, purposeAuthRoot)
	m.Write([]byte(MagicFS))
	m.Write([]byte{FormatVersion})
	m.Write(k.l.Encode())
	m.Write(le64(encodeBlockPtr(mh.entryLeaf)))
	m.Write(le64(mh.imageSize))
	m.Write(encodeExtentsList(tree))
	m.Write(encodeExtentsList(bm))
	m.Write([]byte{0, authSubjectImageContext})
	return m.Sum(nil)
}

// specialExtents reads the extents of inode 1 or 2.
func (r *reader) specialExtents(e indexEntry) ([]Extent, error) {
	if !e.indirect {
		return []Extent{e.ext}, nil
	}
	c := r.l.newCipher(r.k.derive(e.inode, subdomainExtentsList, purposeEncryption))
	p, err := readChained(r.l, c, extentsListAuth(r.k, e.inode), 0, e.ext, r.extent)
	if err != nil {
		if errors.Is(err, errAuth) {
			return nil, ErrWrongKey
		}
		return nil, err
	}
	exts, n, err := decodeExtentsList(p)
	if err != nil {
		return nil, err
	}
	if n != len(p) && !allZero(p[n:]) {
		return nil, errors.New("trailing bytes after extents list")
	}
	return exts, nil
}

// cipherFor is the cipher of an inode's data or extents list.
func (r *reader) cipherFor(inode uint64, sub uint32) cipher.Block {
	return r.l.newCipher(r.k.derive(inode, sub, purposeEncryption))
}

// fs walks the inode index and reads every file.
func (r *reader) fs() (*FS, error) {
	l := r.l
	idxCipher := r.cipherFor(InodeIndexRoot, subdomainData)
	rootExt := r.indexRoot.ext
	var all []indexEntry
	visited := 0
	var leaves []uint64
	var walk func(at uint64, depth int, lo, hi uint64) (int, error)
	walk = func(at uint64, depth int, lo, hi uint64) (int, error) {
		if visited++; visited > 1<<20 || depth > 64 {
			return 0, errors.New("inode index: too deep or too large")
		}
		if r.inSkip(at) || !r.isAllocated(at) {
			return 0, errors.New("inode index node in unallocated space")
		}
		// Internal and leaf node sizes may differ; read the larger and
		// decide by the level field.
		leafSize, intSize := uint64(1)<<l.IndexLeafLog2, uint64(1)<<l.IndexInternalLog2
		if b, err := r.extent(Extent{at, leafSize}); err == nil {
			if n, err := decodeLeaf(l, decryptBlock(idxCipher, b)); err == nil {
				for _, e := range n.entries {
					if e.inode < lo || (hi != 0 && e.inode >= hi) {
						return 0, errors.New("inode index: entry out of order")
					}
				}
				all = append(all, n.entries...)
				leaves = append(leaves, at)
				return 1, nil
			}
		}
		b, err := r.extent(Extent{at, intSize})
		if err != nil {
			return 0, err
		}
		n, err := decodeInternal(l, decryptBlock(idxCipher, b))
		if err != nil {
			return 0, fmt.Errorf("inode index node at block %d: %w", at, err)
		}
		level := -1
		for i, c := range n.children {
			clo, chi := lo, hi
			if i > 0 {
				clo = n.keys[i-1]
			}
			if i < len(n.keys) {
				chi = n.keys[i]
			}
			cl, err := walk(c, depth+1, clo, chi)
			if err != nil {
				return 0, err
			}
			if level >= 0 && cl != level {
				return 0, errors.New("inode index: unbalanced tree")
			}
			level = cl
		}
		if level+1 != n.level {
			return 0, errors.New("inode index: inconsistent node levels")
		}
		return n.level, nil
	}
	levels, err := walk(rootExt.Begin, 0, 0, 0)
	if err != nil {
		return nil, err
	}
	if len(leaves) == 0 || leaves[0] != r.mh.entryLeaf {
		return nil, errors.New("inode index: the entry leaf is not the first leaf")
	}
	f := &FS{}
	f.Info = Info{
		Layout: l, Salt: r.sh.salt, ImageBytes: r.mh.imageSize * uint64(r.ab), FileBytes: uint64(len(r.img)),
		AuthTreeNodes: r.g.nodeCount, AuthTreeLevels: r.g.levels, IndexLevels: levels,
	}
	for p := uint64(0); p < r.mh.imageSize; p++ {
		if r.isAllocated(p) {
			f.Info.AllocatedABs++
		}
	}
	cc := r.cipherFor(inodeUpdateCounter, subdomainData)
	cipher.NewCBCDecrypter(cc, make([]byte, ivLen)).CryptBlocks(f.Info.UpdateCounter[:], r.mh.counter)
	f.Info.AuxMetadata = r.auxPayload
	for i, e := range all {
		if i > 0 && all[i-1].inode >= e.inode {
			return nil, errors.New("inode index: duplicate or unsorted inodes")
		}
		if e.inode < FirstUserInode {
			continue
		}
		data, err := r.readFile(e)
		if err != nil {
			return nil, fmt.Errorf("inode %d (0x%x): %w", e.inode, e.inode, err)
		}
		f.Inodes = append(f.Inodes, Inode{Number: e.inode, Flags: e.flags, Data: data})
	}
	return f, nil
}

func (r *reader) checkAllocated(e Extent) error {
	for p := e.Begin; p < e.End(); p++ {
		if p < r.headerEnd || r.inSkip(p) || !r.isAllocated(p) {
			return fmt.Errorf("extent at block %d is not allocated", p)
		}
	}
	return nil
}

func (r *reader) readFile(e indexEntry) ([]byte, error) {
	if !e.hasExtent {
		return []byte{}, nil
	}
	exts := []Extent{e.ext}
	if e.indirect {
		read := func(x Extent) ([]byte, error) {
			if err := r.checkAllocated(x); err != nil {
				return nil, err
			}
			return r.extent(x)
		}
		p, err := readChained(r.l, r.cipherFor(e.inode, subdomainExtentsList), nil, 0, e.ext, read)
		if err != nil {
			return nil, fmt.Errorf("extents list: %w", err)
		}
		exts, _, err = decodeExtentsList(p)
		if err != nil {
			return nil, fmt.Errorf("extents list: %w", err)
		}
	}
	var data []byte
	for _, x := range exts {
		if err := r.checkAllocated(x); err != nil {
			return nil, err
		}
		b, err := r.extent(x)
		if err != nil {
			return nil, err
		}
		data = append(data, b...)
	}
	return decryptExtents(r.cipherFor(e.inode, subdomainData), data)
}
