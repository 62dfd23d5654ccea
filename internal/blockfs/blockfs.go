// Package blockfs is the format of the proof-of-concept SVSM's vTPM state
// image ("BlockFS"): sector 0 holds postcard-encoded metadata {magic,
// size}, sectors 1..32 hold the 16 KiB NVChip, every sector XTS-encrypted
// with tweak 0. Like package cocoonfs it works on bytes (Decode, Encode);
// package container reads and writes the image files.
package blockfs

import (
	"errors"
	"fmt"

	"github.com/vtpm-mfg/vtpm-mfg/internal/xts"
)

const (
	// SectorSize is the block size of the state device.
	SectorSize = xts.SectorSize
	// Magic is the metadata magic number.
	Magic = 0xDEADBEEF
	// NVSize is the only NVChip size the SVSM's TPM accepts.
	NVSize = 16384
	// Capacity is the byte capacity of the NVChip file inside the image.
	Capacity = 32768
	// UsedSectors is the number of sectors holding data (metadata + NVChip).
	UsedSectors = 1 + NVSize/SectorSize
	// MinImageSize is the smallest image that can hold a 16 KiB NVChip.
	MinImageSize = UsedSectors * SectorSize
	// DefaultImageSize is the size the SVSM demo creates (truncate -s16M).
	DefaultImageSize = 16 << 20
)

// Metadata is the plaintext of sector 0.
type Metadata struct {
	Magic uint32
	Size  uint64
}

// putUvarint appends x as an unsigned LEB128 varint (postcard encoding).
func putUvarint(b []byte, x uint64) []byte {
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}

// uvarint decodes a varint of at most maxBytes bytes, as postcard does for
// the type's width (u32: 5 bytes, u64: 10 bytes).
func uvarint(b []byte, maxBytes int, bits uint) (uint64, int, error) {
	var x uint64
	for i := 0; i < maxBytes && i < len(b); i++ {
		c := b[i]
		x |= uint64(c&0x7f) << (7 * uint(i))
		if c < 0x80 {
			if bits < 64 && x>>bits != 0 {
				return 0, 0, errors.New("varint overflows its type")
			}
			if i == maxBytes-1 && bits == 64 && c > 1 {
				return 0, 0, errors.New("varint overflows its type")
			}
			return x, i + 1, nil
		}
	}
	return 0, 0, errors.New("varint does not terminate")
}

// Encode returns the 512-byte plaintext metadata sector.
func (m Metadata) Encode() []byte {
	b := putUvarint(nil, uint64(m.Magic))
	b = putUvarint(b, m.Size)
	s := make([]byte, SectorSize)
	copy(s, b)
	return s
}

// DecodeMetadata parses a plaintext metadata sector.
func DecodeMetadata(s []byte) (Metadata, error) {
	magic, n, err := uvarint(s, 5, 32)
	if err != nil {
		return Metadata{}, fmt.Errorf("magic: %w", err)
	}
	size, _, err := uvarint(s[n:], 10, 64)
	if err != nil {
		return Metadata{}, fmt.Errorf("size: %w", err)
	}
	return Metadata{Magic: uint32(magic), Size: size}, nil
}

// Error is a validation failure of an image.
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string { return e.Path + ": " + e.Msg }

// Decode decrypts and validates the first UsedSectors sectors of an image.
func Decode(path string, head []byte, key []byte) ([]byte, Metadata, error) {
	if len(head) < MinImageSize {
		return nil, Metadata{}, &Error{path, fmt.Sprintf("too short for an SVSM state image: %d bytes, need at least %d (33 sectors); if it was truncated, restore it from a backup, or re-manufacture it", len(head), MinImageSize)}
	}
	c, err := xts.New(key)
	if err != nil {
		return nil, Metadata{}, err
	}
	// The metadata sector tells a wrong key: the NVChip sectors are only
	// decrypted once it has been checked.
	plain := make([]byte, MinImageSize)
	if err := c.DecryptSectors(plain[:SectorSize], head[:SectorSize]); err != nil {
		return nil, Metadata{}, err
	}
	m, err := DecodeMetadata(plain[:SectorSize])
	if err != nil || m.Magic != Magic {
		return nil, Metadata{}, &Error{path, "wrong key or not an SVSM state image (metadata magic mismatch); check that the key is this image's (key kbs prints a key's fingerprint), that the file is a BlockFS state image, or restore it from a backup"}
	}
	if m.Size != NVSize {
		return nil, m, &Error{path, fmt.Sprintf("metadata says the NVChip is %d bytes, not %d: the SVSM would re-manufacture this TPM (image unusable as it is; re-create it with pack or manufacture)", m.Size, NVSize)}
	}
	if err := c.DecryptSectors(plain[SectorSize:], head[SectorSize:MinImageSize]); err != nil {
		return nil, Metadata{}, err
	}
	return plain[SectorSize:], m, nil
}

// Encode returns the encrypted UsedSectors sectors for an NVChip.
func Encode(nv, key []byte) ([]byte, error) {
	if len(nv) != NVSize {
		return nil, fmt.Errorf("NVChip must be exactly %d bytes, got %d", NVSize, len(nv))
	}
	c, err := xts.New(key)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, MinImageSize)
	copy(buf, Metadata{Magic: Magic, Size: NVSize}.Encode())
	copy(buf[SectorSize:], nv)
	if err := c.EncryptSectors(buf, buf); err != nil {
		return nil, err
	}
	return buf, nil
}
