package cocoonfs

import (
	"encoding/binary"
	"hash/crc32"
)

// checksumLen is the length of the format's checksum: a pair of CRC-32s.
const checksumLen = 8

// swapNeighborBits exchanges the bits at odd and even positions of b.
func swapNeighborBits(b byte) byte {
	return (b&0x55)<<1 | (b&0xaa)>>1
}

// checksum returns the format's integrity checksum of data: the standard
// CRC-32 (IEEE polynomial, as zlib computes it) of the data, followed by
// the CRC-32 of the data with each byte's neighboring bits swapped, both
// little-endian.
func checksum(data ...[]byte) [checksumLen]byte {
	var crc, snb uint32
	var buf [512]byte
	for _, d := range data {
		crc = crc32.Update(crc, crc32.IEEETable, d)
		for len(d) > 0 {
			n := copy(buf[:], d)
			for i := 0; i < n; i++ {
				buf[i] = swapNeighborBits(buf[i])
			}
			snb = crc32.Update(snb, crc32.IEEETable, buf[:n])
			d = d[n:]
		}
	}
	var out [checksumLen]byte
	binary.LittleEndian.PutUint32(out[:4], crc)
	binary.LittleEndian.PutUint32(out[4:], snb)
	return out
}
