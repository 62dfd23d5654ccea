package cocoonfs

import (
	"encoding/binary"
	"errors"
)

// Inode index B+-tree nodes (the layout of cocoon-tpm-storage 0.1.4):
//
//	leaf:     next-leaf block ptr | M extent ptrs | M keys (u64) | M flags (u32) | level=1 (u32)
//	internal: M+1 child block ptrs | M separator keys (u64) | level (u32)
//
// with M the most entries the node's encrypted payload holds; unused
// entries have key 0, flags 0 and NIL pointers.

type indexEntry struct {
	inode     uint64
	flags     uint32
	ext       Extent
	indirect  bool
	hasExtent bool
}

type leafNode struct {
	next    uint64 // nilPtr if none
	entries []indexEntry
}

type internalNode struct {
	level    int // 1-based from the leaves
	children []uint64
	keys     []uint64
}

func maxLeafEntries(l Layout) int     { return (blockPayloadLen(l.leafNodeSize()) - 12) / 20 }
func maxInternalEntries(l Layout) int { return (blockPayloadLen(l.internalNodeSize()) - 12) / 16 }

func decodeLeaf(l Layout, b []byte) (*leafNode, error) {
	m := maxLeafEntries(l)
	if binary.LittleEndian.Uint32(b[8+20*m:]) != 1 {
		return nil, errors.New("not a leaf node")
	}
	n := &leafNode{next: binary.LittleEndian.Uint64(b)}
	for i := 0; i < m; i++ {
		key := binary.LittleEndian.Uint64(b[8+8*m+8*i:])
		ptr := binary.LittleEndian.Uint64(b[8+8*i:])
		flags := binary.LittleEndian.Uint32(b[8+16*m+4*i:])
		if key == 0 {
			if ptr != nilPtr || flags != 0 {
				return nil, errors.New("leaf node: vacant entry not clear")
			}
			for j := i + 1; j < m; j++ {
				if binary.LittleEndian.Uint64(b[8+8*m+8*j:]) != 0 {
					return nil, errors.New("leaf node: vacant entry before an occupied one")
				}
			}
			break
		}
		e := indexEntry{inode: key, flags: flags}
		e.ext, e.indirect, e.hasExtent = decodeExtentPtr(ptr)
		if flags>>8 != 0 {
			return nil, errors.New("leaf node: reserved inode flags set")
		}
		if len(n.entries) > 0 && n.entries[len(n.entries)-1].inode >= key {
			return nil, errors.New("leaf node: entries not sorted")
		}
		n.entries = append(n.entries, e)
	}
	return n, nil
}

func encodeLeaf(l Layout, n *leafNode) []byte {
	m := maxLeafEntries(l)
	b := make([]byte, blockPayloadLen(l.leafNodeSize()))
	binary.LittleEndian.PutUint64(b, n.next)
	for i := 0; i < m; i++ {
		ptr := nilPtr
		var key uint64
		var flags uint32
		if i < len(n.entries) {
			e := n.entries[i]
			key, flags = e.inode, e.flags
			if e.hasExtent {
				ptr = encodeExtentPtr(e.ext, e.indirect)
			}
		}
		binary.LittleEndian.PutUint64(b[8+8*i:], ptr)
		binary.LittleEndian.PutUint64(b[8+8*m+8*i:], key)
		binary.LittleEndian.PutUint32(b[8+16*m+4*i:], flags)
	}
	binary.LittleEndian.PutUint32(b[8+20*m:], 1)
	return b
}

func decodeInternal(l Layout, b []byte) (*internalNode, error) {
	m := maxInternalEntries(l)
	lv := binary.LittleEndian.Uint32(b[8*(m+1)+8*m:])
	if lv < 2 || lv > 64 {
		return nil, errors.New("not an internal node")
	}
	n := &internalNode{level: int(lv)}
	for i := 0; i < m; i++ {
		key := binary.LittleEndian.Uint64(b[8*(m+1)+8*i:])
		if key == 0 {
			break
		}
		if len(n.keys) > 0 && n.keys[len(n.keys)-1] >= key {
			return nil, errors.New("internal node: keys not sorted")
		}
		n.keys = append(n.keys, key)
	}
	if len(n.keys) == 0 {
		return nil, errors.New("internal node without separator keys")
	}
	for i := 0; i <= len(n.keys); i++ {
		c, ok, err := decodeBlockPtr(binary.LittleEndian.Uint64(b[8*i:]))
		if err != nil || !ok {
			return nil, errors.New("internal node: invalid child pointer")
		}
		n.children = append(n.children, c)
	}
	return n, nil
}

func encodeInternal(l Layout, n *internalNode) []byte {
	m := maxInternalEntries(l)
	b := make([]byte, blockPayloadLen(l.internalNodeSize()))
	for i := 0; i <= m; i++ {
		ptr := nilPtr
		if i < len(n.children) {
			ptr = encodeBlockPtr(n.children[i])
		}
		binary.LittleEndian.PutUint64(b[8*i:], ptr)
	}
	for i, k := range n.keys {
		binary.LittleEndian.PutUint64(b[8*(m+1)+8*i:], k)
	}
	binary.LittleEndian.PutUint32(b[8*(m+1)+8*m:], uint32(n.level))
	return b
}
