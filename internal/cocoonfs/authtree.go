package cocoonfs

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// Authentication subject identifiers.
const (
	authSubjectImageContext   = 1
	authSubjectTreeRoot       = 2
	authSubjectTreeDescendant = 3
	authSubjectTreeDataBlock  = 4
	authSubjectIndexNode      = 6
)

// treeGeom is the shape of an authentication tree: nodes are stored in
// DFS pre-order as if every subtree were full, cut off after nodeCount
// nodes.
type treeGeom struct {
	nodeABLog2 uint // node size in Allocation Blocks, log2
	kLog2      uint // digests per internal node, log2
	dLog2      uint // digests per leaf node, log2
	aLog2      uint // Allocation Blocks per data block, log2
	nodeDigest int
	dataDigest int
	nodeCount  uint64
	levels     int
}

func log2Ceil(n int) uint { return uint(bits.Len(uint(n - 1))) }

func newTreeGeom(l Layout, nodeCount uint64) (treeGeom, error) {
	g := treeGeom{
		nodeABLog2: uint(l.AuthTreeNodeIOBlocksLog2) + uint(l.IOBlockAllocBlocksLog2),
		aLog2:      uint(l.AuthTreeDataBlockLog2),
		nodeDigest: digestLen(l.AuthTreeNodeHash),
		dataDigest: digestLen(l.AuthTreeDataHMAC),
		nodeCount:  nodeCount,
	}
	nodeSizeLog2 := g.nodeABLog2 + uint(l.AllocBlock128Log2) + 7
	g.kLog2 = nodeSizeLog2 - log2Ceil(g.nodeDigest)
	g.dLog2 = nodeSizeLog2 - log2Ceil(g.dataDigest)
	if g.kLog2 < 1 || g.dLog2 < 1 {
		return g, errors.New("authentication tree nodes too small for their digests")
	}
	if nodeCount == 0 {
		return g, errors.New("empty authentication tree")
	}
	// Levels from the node count, capped as the format requires.
	maxLevels := min(64, 64-g.dLog2-g.aLog2+g.kLog2)
	maxLevels = (maxLevels + g.kLog2 - 1) / g.kLog2
	t := nodeCount - (nodeCount-1)>>g.kLog2
	lv := maxLevels
	if t <= 1<<63 {
		tl := uint(bits.Len64(t - 1)) // log2 of t rounded up to a power of two
		lv = min((tl+g.kLog2-1)/g.kLog2+1, maxLevels)
	}
	g.levels = int(lv)
	return g, nil
}

// subtreeNodes is the node count of a full subtree rooted at level.
func (g treeGeom) subtreeNodes(level int) uint64 {
	n := uint64(0)
	for i := 0; i <= level; i++ {
		n = n<<g.kLog2 + 1
	}
	return n
}

// coverLog2 is log2 of the data blocks a node at level covers.
func (g treeGeom) coverLog2(level int) uint { return uint(level)*g.kLog2 + g.dLog2 }

// maxCovered is the number of data blocks the stored nodes cover.
func (g treeGeom) maxCovered() uint64 {
	if g.levels == 1 {
		return 1 << g.dLog2
	}
	n := g.nodeCount
	var covered uint64
	sub := g.subtreeNodes(g.levels - 1)
	for level := g.levels; level > 1 && n != 0; {
		if n < uint64(level) {
			break
		}
		level--
		n--
		sub = (sub - 1) >> g.kLog2
		full := n / sub
		n -= full * sub
		c := uint(level-1)*g.kLog2 + g.dLog2
		if c >= 64 || full >= 1<<(64-c) {
			return ^uint64(0)
		}
		covered += full << c
	}
	return covered
}

// nodeAt returns the DFS pre-order index of the node at level covering
// data block db.
func (g treeGeom) nodeAt(db uint64, level int) uint64 {
	var idx uint64
	if level+1 == g.levels {
		return 0
	}
	index := db >> g.coverLog2(level)
	sub := g.subtreeNodes(level)
	mask := uint64(1)<<g.kLog2 - 1
	for p := level + 1; p < g.levels; p++ {
		idx += sub*(index&mask) + 1
		index >>= g.kLog2
		sub = sub<<g.kLog2 + 1
	}
	return idx
}

// lastEntryBegin is the first data block covered by the last entry of the
// node at level covering from first.
func (g treeGeom) lastEntryBegin(first uint64, level int) uint64 {
	if level == 0 {
		return first | (1<<g.dLog2 - 1)
	}
	return first | (1<<g.kLog2-1)<<(g.coverLog2(level)-g.kLog2)
}

// nodeCountFor returns the fewest nodes whose tree covers an image of
// imageABs Allocation Blocks (the tree's own blocks excluded from data).
func nodeCountFor(l Layout, imageABs uint64) (uint64, error) {
	nodeAB := uint64(1) << (uint(l.AuthTreeNodeIOBlocksLog2) + uint(l.IOBlockAllocBlocksLog2))
	ok := func(n uint64) bool {
		if n*nodeAB >= imageABs {
			return true
		}
		g, err := newTreeGeom(l, n)
		if err != nil {
			return false
		}
		data := (imageABs - n*nodeAB + 1<<g.aLog2 - 1) >> g.aLog2
		return data <= g.maxCovered()
	}
	lo, hi := uint64(1), uint64(1)
	for !ok(hi) {
		lo, hi = hi+1, hi*2
	}
	for lo < hi {
		m := lo + (hi-lo)/2
		if ok(m) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if lo*nodeAB >= imageABs {
		return 0, errors.New("image too small for its authentication tree")
	}
	return lo, nil
}

func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
