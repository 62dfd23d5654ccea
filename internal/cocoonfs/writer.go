package cocoonfs

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sort"
)

// DefaultSaltLen is the salt length of images this package creates.
const DefaultSaltLen = 16

// DefaultAux is the auxiliary metadata a fresh image carries, as the
// reference tool writes it: no entries, an extra reserve capacity of 1024
// bytes (so that two update groups are allocated).
func DefaultAux() []byte {
	b := make([]byte, 28)
	b[16] = 8
	binary.LittleEndian.PutUint64(b[20:], 1024)
	return b
}

// WriteOptions describes an image to create.
type WriteOptions struct {
	Key        []byte // the key material (the secret the key broker releases)
	Layout     Layout
	Salt       []byte // nil: DefaultSaltLen fresh random bytes
	ImageBytes uint64 // rounded down to the IO Block
	Inodes     []Inode
	Aux        []byte    // TLV sequence with its termination record; nil: DefaultAux()
	NoAux      bool      // store no auxiliary metadata at all
	Counter    *[16]byte // filesystem update counter; nil: random
	// ZeroFree leaves unallocated space zero (a sparse file) instead of
	// filling it with random bytes as the reference implementation does.
	ZeroFree bool
	Rand     io.Reader // nil: crypto/rand
}

// ErrTooSmall reports an image size that cannot hold the requested files.
type ErrTooSmall struct{ Need, Have uint64 }

func (e *ErrTooSmall) Error() string {
	return fmt.Sprintf("a CocoonFS image of %d bytes cannot hold these files; at least %d bytes are needed", e.Have, e.Need)
}

// allocator places extents first-fit: each goes to the lowest aligned
// position not overlapping what is already placed, so that small
// structures fill the gaps alignment leaves.
type allocator struct {
	next uint64   // end of everything placed
	used []Extent // sorted by Begin
}

func (a *allocator) take(n, align uint64) Extent {
	var pos uint64
	i := 0
	for ; ; i++ {
		b := (pos + align - 1) / align * align
		if i == len(a.used) || b+n <= a.used[i].Begin {
			e := Extent{Begin: b, Len: n}
			a.used = append(a.used, Extent{})
			copy(a.used[i+1:], a.used[i:])
			a.used[i] = e
			a.next = max(a.next, e.End())
			return e
		}
		pos = max(pos, a.used[i].End())
	}
}

// Write formats a complete image holding opts.Inodes and returns it.
func Write(opts WriteOptions) ([]byte, error) {
	l := opts.Layout
	if err := l.Validate(); err != nil {
		return nil, err
	}
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	var rerr error
	fill := func(b []byte) {
		if _, err := io.ReadFull(rnd, b); err != nil && rerr == nil {
			rerr = err
		}
	}
	salt := opts.Salt
	if salt == nil {
		salt = make([]byte, DefaultSaltLen)
		fill(salt)
	}
	if len(salt) > 255 {
		return nil, errors.New("salt longer than 255 bytes")
	}
	aux := opts.Aux
	if aux == nil && !opts.NoAux {
		aux = DefaultAux()
	}
	if aux != nil {
		if n, err := auxTLVLen(aux); err != nil || n != len(aux) {
			return nil, errors.New("auxiliary metadata is not a terminated TLV sequence")
		}
	}
	inodes := append([]Inode(nil), opts.Inodes...)
	sort.Slice(inodes, func(i, j int) bool { return inodes[i].Number < inodes[j].Number })
	for i, in := range inodes {
		if in.Number < FirstUserInode {
			return nil, fmt.Errorf("inode %d is reserved by the filesystem", in.Number)
		}
		if i > 0 && inodes[i-1].Number == in.Number {
			return nil, fmt.Errorf("inode %d given twice", in.Number)
		}
		if in.Flags>>8 != 0 {
			return nil, fmt.Errorf("inode %d: flags 0x%x use reserved bits", in.Number, in.Flags)
		}
	}
	ab := uint64(l.allocBlockSize())
	ioABs := uint64(1) << l.IOBlockAllocBlocksLog2
	imageABs := opts.ImageBytes / ab / ioABs * ioABs
	align := uint64(1) << l.ioAlignLog2()

	// Plan the allocations.
	me := mutableHeaderExtent(l, len(salt))
	jh := journalHeadExtent(l, len(salt))
	a := &allocator{next: jh.End(), used: []Extent{{0, me.End()}, jh}}
	nodeAB := uint64(1) << (uint(l.AuthTreeNodeIOBlocksLog2) + uint(l.IOBlockAllocBlocksLog2))
	nodes, err := nodeCountFor(l, max(imageABs, 1))
	if err != nil || imageABs == 0 {
		nodes = 1
	}
	treeLen := (nodes*nodeAB + align - 1) / align * align
	treeExt := a.take(treeLen, align)
	g, err := newTreeGeom(l, treeLen/nodeAB)
	if err != nil {
		return nil, err
	}
	wpb := uint64(blockPayloadLen(l.bitmapFileBlockSize()) / 8)
	fbABs := uint64(1) << l.BitmapFileBlockLog2
	bmBlocks := ((imageABs+63)/64 + wpb - 1) / wpb
	bmLen := bmBlocks * fbABs
	bmLen = (bmLen + (1 << g.aLog2) - 1) / (1 << g.aLog2) * (1 << g.aLog2)
	bmExt := a.take(max(bmLen, 1<<g.aLog2), align)

	reserve, twoGroups := auxReserve(aux)
	var auxExts []Extent
	for i := 0; i < 2 && aux != nil; i++ {
		if i == 1 && !twoGroups {
			break
		}
		need := uint64(auxHdrLen(l, true)) + uint64(len(aux)) + reserve
		n := (need + ab*align - 1) / (ab * align) * align
		if n > maxExtentPtrBlocks {
			return nil, errors.New("auxiliary metadata too large")
		}
		auxExts = append(auxExts, a.take(n, align))
	}

	// Inode index shape.
	type entry struct {
		indexEntry
		data []byte
	}
	entries := []*entry{{indexEntry: indexEntry{inode: InodeAuthTree}}, {indexEntry: indexEntry{inode: InodeAllocBitmap}}, {indexEntry: indexEntry{inode: InodeIndexRoot}}}
	for _, in := range inodes {
		entries = append(entries, &entry{indexEntry: indexEntry{inode: in.Number, flags: in.Flags}, data: in.Data})
	}
	leafABs, intABs := uint64(1)<<l.IndexLeafLog2, uint64(1)<<l.IndexInternalLog2
	var levels [][]int // per level, the number of entries (leaves) or children (internal) per node
	leafCounts := split(len(entries), maxLeafEntries(l))
	levels = append(levels, leafCounts)
	for len(levels[len(levels)-1]) > 1 {
		levels = append(levels, split(len(levels[len(levels)-1]), maxInternalEntries(l)+1))
	}
	var nodeLoc [][]uint64
	for lv, counts := range levels {
		var locs []uint64
		for range counts {
			if lv == 0 {
				locs = append(locs, a.take(leafABs, 1).Begin)
			} else {
				locs = append(locs, a.take(intABs, 1).Begin)
			}
		}
		nodeLoc = append(nodeLoc, locs)
	}
	rootLoc := nodeLoc[len(nodeLoc)-1][0]
	rootABs := leafABs
	if len(levels) > 1 {
		rootABs = intABs
	}

	// Extents lists of the authentication tree and bitmap (inline
	// authenticated), then each file.
	chainFor := func(payloadLen int, tagLen int) Extent {
		for n := uint64(1); ; n++ {
			if c := chainedPayloadLen(int(n*ab), 0, tagLen, true) - 8; c >= payloadLen+16 {
				return a.take(n, 1)
			}
		}
	}
	preauthLen := digestLen(l.PreauthHMAC)
	// The tree and bitmap are referenced directly when they fit an extent
	// pointer (as the reference does), else through an inline
	// authenticated extents list.
	specialLists := [2][]byte{encodeExtentsList([]Extent{treeExt}), encodeExtentsList([]Extent{bmExt})}
	for i, ext := range []Extent{treeExt, bmExt} {
		entries[i].hasExtent = true
		if ext.Len <= maxExtentPtrBlocks {
			entries[i].ext = ext
			continue
		}
		entries[i].ext, entries[i].indirect = chainFor(len(specialLists[i]), preauthLen), true
	}
	entries[2].ext, entries[2].hasExtent = Extent{rootLoc, rootABs}, true
	type fileLayout struct {
		data  Extent
		chain Extent
	}
	files := map[uint64]fileLayout{}
	for _, e := range entries[3:] {
		n := (uint64(extentsCapacityNeeded(len(e.data))) + ab - 1) / ab
		fl := fileLayout{data: a.take(n, 1)}
		if n <= maxExtentPtrBlocks {
			e.ext, e.hasExtent = fl.data, true
		} else {
			fl.chain = chainFor(len(encodeExtentsList([]Extent{fl.data})), 0)
			e.ext, e.indirect, e.hasExtent = fl.chain, true, true
		}
		files[e.inode] = fl
	}
	if a.next > imageABs {
		// The tree shrinks a little with the data; report what this layout needs.
		return nil, &ErrTooSmall{Need: (a.next + ioABs - 1) / ioABs * ioABs * ab, Have: imageABs * ab}
	}

	// Keys and image buffer.
	if len(opts.Key) == 0 {
		return nil, errors.New("no key")
	}
	k := newKeys(l, opts.Key, salt)
	img := make([]byte, imageABs*ab)
	if !opts.ZeroFree {
		// Free space gets noise from a ChaCha8 stream keyed from the random
		// source (the reference uses a Hash_DRBG the same way); salt, IVs
		// and the counter are drawn from the random source itself.
		var seed [32]byte
		fill(seed[:])
		mrand.NewChaCha8(seed).Read(img)
	}
	put := func(e Extent, b []byte) { copy(img[e.Begin*ab:e.End()*ab], b) }
	zero := func(e Extent) { clear(img[e.Begin*ab : e.End()*ab]) }
	zero(Extent{0, me.End()})
	zero(jh)
	zero(treeExt)
	bitmap := make([]uint64, bmBlocks*wpb)
	for _, e := range a.used {
		for p := e.Begin; p < e.End(); p++ {
			bitmap[p/64] |= 1 << (p % 64)
		}
	}

	// Allocation bitmap file.
	bmCipher := l.newCipher(k.derive(InodeAllocBitmap, subdomainData, purposeEncryption))
	fb := l.bitmapFileBlockSize()
	for i := uint64(0); i < bmExt.Len/fbABs; i++ {
		pt := make([]byte, wpb*8)
		for w := uint64(0); w < wpb && i < bmBlocks; w++ {
			binary.LittleEndian.PutUint64(pt[w*8:], bitmap[i*wpb+w])
		}
		put(Extent{bmExt.Begin + i*fbABs, fbABs}, encryptBlock(bmCipher, pt, fb, fill))
	}

	// Extents lists of the authentication tree and the bitmap.
	for i, e := range entries[:2] {
		if !e.indirect {
			continue
		}
		ch := l.newCipher(k.derive(e.inode, subdomainExtentsList, purposeEncryption))
		put(e.ext, writeChained(l, ch, extentsListAuth(k, e.inode), nil, []Extent{e.ext}, specialLists[i], fill)[0])
	}

	// Files.
	for _, e := range entries[3:] {
		fl := files[e.inode]
		c := l.newCipher(k.derive(e.inode, subdomainData, purposeEncryption))
		put(fl.data, encryptExtents(c, e.data, int(fl.data.Len*ab), fill))
		if fl.chain.Len != 0 {
			cc := l.newCipher(k.derive(e.inode, subdomainExtentsList, purposeEncryption))
			put(fl.chain, writeChained(l, cc, nil, nil, []Extent{fl.chain}, encodeExtentsList([]Extent{fl.data}), fill)[0])
		}
	}

	// Inode index, bottom-up.
	idxCipher := l.newCipher(k.derive(InodeIndexRoot, subdomainData, purposeEncryption))
	var firstKeys []uint64 // smallest inode under each node of the level below
	pos := 0
	for i, cnt := range levels[0] {
		n := &leafNode{next: nilPtr}
		if i+1 < len(levels[0]) {
			n.next = encodeBlockPtr(nodeLoc[0][i+1])
		}
		for _, e := range entries[pos : pos+cnt] {
			n.entries = append(n.entries, e.indexEntry)
		}
		firstKeys = append(firstKeys, entries[pos].inode)
		pos += cnt
		put(Extent{nodeLoc[0][i], leafABs}, encryptBlock(idxCipher, encodeLeaf(l, n), l.leafNodeSize(), fill))
	}
	for lv := 1; lv < len(levels); lv++ {
		var next []uint64
		pos := 0
		for i, cnt := range levels[lv] {
			n := &internalNode{level: lv + 1}
			for j := pos; j < pos+cnt; j++ {
				n.children = append(n.children, nodeLoc[lv-1][j])
				if j > pos {
					n.keys = append(n.keys, firstKeys[j])
				}
			}
			next = append(next, firstKeys[pos])
			pos += cnt
			put(Extent{nodeLoc[lv][i], intABs}, encryptBlock(idxCipher, encodeInternal(l, n), l.internalNodeSize(), fill))
		}
		firstKeys = next
	}

	// Auxiliary metadata: a circle of one or two update group heads.
	for i, e := range auxExts {
		b := make([]byte, e.Len*ab)
		next, nbo := auxExts[(i+1)%len(auxExts)], auxExts[i]
		binary.LittleEndian.PutUint64(b, encodeExtentPtr(next, false))
		binary.LittleEndian.PutUint64(b[8:], encodeExtentPtr(nbo, false))
		if i == 0 {
			b[16] = 1 // active
			copy(b[auxHdrLen(l, true):], aux)
		}
		l.applyIntegrity(b, 0, 17)
		put(e, b)
	}

	// Mutable header and authentication tree.
	mh := &mutableHeader{auxHeads: [2]uint64{nilPtr, nilPtr}, entryLeaf: nodeLoc[0][0], imageSize: imageABs}
	for i, e := range auxExts {
		mh.auxHeads[i] = encodeExtentPtr(e, false)
	}
	var counter [16]byte
	if opts.Counter != nil {
		counter = *opts.Counter
	} else {
		fill(counter[:])
	}
	mh.counter = make([]byte, counterLen)
	cipher.NewCBCEncrypter(l.newCipher(k.derive(inodeUpdateCounter, subdomainData, purposeEncryption)), make([]byte, ivLen)).CryptBlocks(mh.counter, counter[:])
	m := k.hmac(l.PreauthHMAC, InodeIndexRoot, subdomainData, purposePreauth)
	m.Write(img[mh.entryLeaf*ab : (mh.entryLeaf+leafABs)*ab])
	m.Write(cipherParams(l))
	m.Write([]byte{0, authSubjectIndexNode})
	mh.preauth = m.Sum(nil)

	r := &reader{img: img, l: l, ab: int(ab), k: k, mh: mh, g: g, tree: []Extent{treeExt}, treeSorted: []Extent{treeExt}, bitmap: bitmap,
		skip: append([]Extent{jh}, auxExts...), headerEnd: me.End(), treeData: img[treeExt.Begin*ab : treeExt.End()*ab]}
	r.dataBlocks = (imageABs - treeExt.Len + 1<<g.aLog2 - 1) >> g.aLog2
	if r.dataBlocks > g.maxCovered() {
		return nil, errors.New("internal error: authentication tree too small")
	}
	mh.rootHMAC = r.sealTree([]Extent{bmExt})

	put(Extent{0, me.Begin}, encodeStaticHeader(l, salt))
	copy(img[me.Begin*ab:], mh.encode(l))
	if rerr != nil {
		return nil, fmt.Errorf("random source: %w", rerr)
	}
	return img, nil
}

// split divides n items into the fewest nodes of at most m, as evenly as
// possible, and returns the count per node.
func split(n, m int) []int {
	k := (n + m - 1) / m
	if k == 0 {
		k = 1
	}
	out := make([]int, k)
	for i := range out {
		out[i] = n / k
		if i < n%k {
			out[i]++
		}
	}
	return out
}

// sealTree computes the authentication tree over the image's data blocks
// as the bitmap allocates them, into r.treeData (which must be the tree's
// storage in the image), and returns the root HMAC for the mutable header.
func (r *reader) sealTree(bmExts []Extent) []byte {
	g, l, tree := r.g, r.l, r.treeData
	clear(tree)
	nodeSize := r.ab << g.nodeABLog2
	var build func(level int, first uint64) []byte
	build = func(level int, first uint64) []byte {
		idx := g.nodeAt(first, level)
		node := tree[int(idx)*nodeSize : int(idx+1)*nodeSize]
		if level == 0 {
			for i := uint64(0); i < 1<<g.dLog2 && first+i < r.dataBlocks; i++ {
				copy(node[int(i)*g.dataDigest:], r.dataBlockDigest(first+i, false))
			}
			return node[:g.dataDigest<<g.dLog2]
		}
		span := uint64(1) << g.coverLog2(level-1)
		for i := uint64(0); i < 1<<g.kLog2 && first+i*span < r.dataBlocks; i++ {
			cf := first + i*span
			child := build(level-1, cf)
			h := mustHash(l.AuthTreeNodeHash).New()
			h.Write(child)
			h.Write(le64(g.lastEntryBegin(cf, level-1)))
			h.Write([]byte{0, authSubjectTreeDescendant})
			copy(node[int(i)*g.nodeDigest:], h.Sum(nil))
		}
		return node[:g.nodeDigest<<g.kLog2]
	}
	rootEntries := build(g.levels-1, 0)
	rm := r.k.hmac(l.AuthTreeRootHMAC, InodeAuthTree, 0, purposeAuthRoot)
	rm.Write(rootEntries)
	rm.Write(le64(g.lastEntryBegin(0, g.levels-1)))
	rm.Write(r.mh.counter)
	rm.Write(imageContext(r.k, r.mh, r.tree, bmExts))
	rm.Write([]byte{0, authSubjectTreeRoot})
	return rm.Sum(nil)
}
