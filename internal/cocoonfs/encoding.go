package cocoonfs

import (
	"errors"
	"fmt"
)

// Extent is a physically contiguous range of Allocation Blocks.
type Extent struct {
	Begin uint64 // first Allocation Block
	Len   uint64 // in Allocation Blocks, > 0
}

func (e Extent) End() uint64 { return e.Begin + e.Len }

// maxExtentPtrBlocks is the longest extent an encoded extent pointer holds.
const maxExtentPtrBlocks = 64

// encodeExtentPtr packs an extent of at most 64 Allocation Blocks:
// begin<<7 | (len-1)<<1 | indirect, little-endian.
func encodeExtentPtr(e Extent, indirect bool) uint64 {
	if e.Len == 0 || e.Len > maxExtentPtrBlocks || e.Begin == 0 || e.Begin>>57 != 0 {
		panic(fmt.Sprintf("cocoonfs: extent %+v cannot be encoded", e))
	}
	v := e.Begin<<7 | (e.Len-1)<<1
	if indirect {
		v |= 1
	}
	return v
}

// nilPtr is the NIL value of extent and block pointers as cocoon-tpm-storage
// 0.1.4 writes and reads them (all ones; the specification says zero).
const nilPtr = ^uint64(0)

// decodeExtentPtr unpacks an encoded extent pointer; ok is false for NIL.
func decodeExtentPtr(v uint64) (e Extent, indirect, ok bool) {
	if v == nilPtr {
		return Extent{}, false, false
	}
	return Extent{Begin: v >> 7, Len: (v>>1)&0x3f + 1}, v&1 != 0, true
}

// encodeBlockPtr packs the location of a block: begin<<7.
func encodeBlockPtr(begin uint64) uint64 { return begin << 7 }

// decodeBlockPtr unpacks an encoded block pointer; ok is false for NIL.
// Reserved low bits must be clear.
func decodeBlockPtr(v uint64) (uint64, bool, error) {
	if v == nilPtr {
		return 0, false, nil
	}
	if v&0x7f != 0 {
		return 0, false, errors.New("block pointer has reserved bits set")
	}
	return v >> 7, true, nil
}

// appendUleb128 appends x in unsigned LEB128.
func appendUleb128(b []byte, x uint64) []byte {
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}

// appendSleb128 appends x in signed LEB128.
func appendSleb128(b []byte, x int64) []byte {
	for {
		c := byte(x & 0x7f)
		x >>= 7
		if (x == 0 && c&0x40 == 0) || (x == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

var errLeb128 = errors.New("malformed LEB128 integer")

// uleb128 decodes an unsigned LEB128 integer of at most 64 bits.
func uleb128(b []byte) (uint64, int, error) {
	var x uint64
	for i := 0; i < len(b) && i < 10; i++ {
		c := b[i]
		if i == 9 && c > 1 {
			return 0, 0, errLeb128
		}
		x |= uint64(c&0x7f) << (7 * uint(i))
		if c&0x80 == 0 {
			return x, i + 1, nil
		}
	}
	return 0, 0, errLeb128
}

// sleb128 decodes a signed LEB128 integer of at most 64 bits.
func sleb128(b []byte) (int64, int, error) {
	var x int64
	var shift uint
	for i := 0; i < len(b) && i < 10; i++ {
		c := b[i]
		x |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				x |= -1 << shift
			}
			return x, i + 1, nil
		}
	}
	return 0, 0, errLeb128
}

// encodeExtentsList encodes extents as (signed delta of begin to the
// previous end, unsigned length) pairs, terminated by two zero bytes.
func encodeExtentsList(exts []Extent) []byte {
	var b []byte
	var prevEnd uint64
	for _, e := range exts {
		b = appendSleb128(b, int64(e.Begin-prevEnd))
		b = appendUleb128(b, e.Len)
		prevEnd = e.End()
	}
	return append(b, 0, 0)
}

// decodeExtentsList decodes an encoded extents list and returns the
// extents and the number of bytes consumed (terminator included).
func decodeExtentsList(b []byte) ([]Extent, int, error) {
	var exts []Extent
	var prevEnd uint64
	pos := 0
	for {
		d, n, err := sleb128(b[pos:])
		if err != nil {
			return nil, 0, err
		}
		pos += n
		l, n, err := uleb128(b[pos:])
		if err != nil {
			return nil, 0, err
		}
		pos += n
		if l == 0 {
			if d != 0 {
				return nil, 0, errors.New("extents list: zero-length extent")
			}
			return exts, pos, nil
		}
		begin := prevEnd + uint64(d)
		if begin == 0 || begin+l < begin {
			return nil, 0, errors.New("extents list: extent out of range")
		}
		exts = append(exts, Extent{Begin: begin, Len: l})
		prevEnd = begin + l
	}
}
