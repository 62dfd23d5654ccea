package cocoonfs

import (
	"errors"
	"fmt"
)

// The common extent integrity protection scheme protects an extent's first
// IO Block against torn writes: a checksum-derived commit ID is written at
// each power-of-two boundary from 256 B on (the displaced bytes saved in
// the protection section), and the first 128 B are XOR-masked with a byte
// that makes them all non-zero. skip bytes at the start (a magic) are
// exempt from the mask; off is the section's offset after them.

// errTorn reports an extent whose integrity protections do not verify.
var errTorn = errors.New("integrity protection does not verify (torn or damaged write)")

func (l Layout) checkpoints() int { return int(l.IOBlockAllocBlocksLog2 + l.AllocBlock128Log2) }

// applyIntegrity transforms ext in place, adding the integrity protections.
// The protection section (at skip+off) must be zero on entry and len(ext)
// at least one IO Block.
func (l Layout) applyIntegrity(ext []byte, skip, off int) {
	sec := skip + off
	save := sec + checksumLen + 1
	n := l.checkpoints()
	for i := sec; i < save+n*checksumLen; i++ {
		ext[i] = 0
	}
	sum := checksum(ext)
	for i := n; i >= 1; i-- {
		end := 1 << (i + 7)
		copy(ext[save+checksumLen*(i-1):], ext[end-checksumLen:end])
	}
	// The mask must differ from every byte it is applied to and from every
	// checksum byte, so that the masked 128 B and the commit ID hold no
	// zero. It is chosen as the reference implementation chooses it for a
	// fresh extent: the first high nibble used by fewer than 16 of those
	// bytes, then the first low nibble not used with it (never 0x00).
	values := make([]byte, 0, 128+2*checksumLen)
	for i := skip; i < 128; i++ {
		if i < sec || i >= sec+checksumLen+1 {
			values = append(values, ext[i])
		}
	}
	values = append(values, sum[:]...)
	values = append(values, sum[0], sum[checksumLen-1], sum[0], sum[checksumLen-1])
	mask := distinctByte(values)
	for i := skip; i < 128; i++ {
		if i < sec || i >= sec+checksumLen+1 {
			ext[i] ^= mask
		}
	}
	var commit [checksumLen]byte
	for i := range sum {
		commit[i] = sum[i] ^ mask
	}
	copy(ext[sec:], commit[:])
	ext[sec+checksumLen] = mask
	for i := 1; i <= n; i++ {
		end := 1 << (i + 7)
		copy(ext[end-checksumLen:end], commit[:])
	}
}

// verifyIntegrity checks ext's integrity protections and removes them in
// place, restoring the original contents.
func (l Layout) verifyIntegrity(ext []byte, skip, off int) error {
	sec := skip + off
	save := sec + checksumLen + 1
	n := l.checkpoints()
	if len(ext) < 128 || len(ext) < 1<<(n+7) || save+n*checksumLen > len(ext) {
		return fmt.Errorf("extent too short for its integrity protections")
	}
	for i := skip; i < 128; i++ {
		if ext[i] == 0 {
			return errTorn
		}
	}
	var commit [checksumLen]byte
	copy(commit[:], ext[sec:])
	mask := ext[sec+checksumLen]
	for i := 1; i <= n; i++ {
		end := 1 << (i + 7)
		if string(ext[end-checksumLen:end]) != string(commit[:]) {
			return errTorn
		}
	}
	for i := skip; i < 128; i++ {
		if i < sec || i >= sec+checksumLen+1 {
			ext[i] ^= mask
		}
	}
	for i := n; i >= 1; i-- {
		end := 1 << (i + 7)
		copy(ext[end-checksumLen:end], ext[save+checksumLen*(i-1):save+checksumLen*i])
	}
	for i := sec; i < save+n*checksumLen; i++ {
		ext[i] = 0
	}
	sum := checksum(ext)
	for i := range sum {
		if sum[i]^mask != commit[i] {
			return errTorn
		}
	}
	return nil
}

// distinctByte returns a non-zero byte value that does not occur in v
// (len(v) < 256).
func distinctByte(v []byte) byte {
	var hi [16]int
	for _, b := range v {
		hi[b>>4]++
	}
	h := 0
	for h < 16 && hi[h] >= 16 {
		h++
	}
	var lo [16]int
	if h == 0 {
		lo[0] = 1
	}
	for _, b := range v {
		if int(b>>4) == h {
			lo[b&0xf]++
		}
	}
	l := 0
	for l < 16 && lo[l] != 0 {
		l++
	}
	return byte(h<<4 | l)
}
