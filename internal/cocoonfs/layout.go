// Package cocoonfs reads and writes CocoonFS format version 1 images, the
// encrypted, authenticated filesystem in which upstream COCONUT-SVSM keeps
// its persistent state (the vTPM's NVChip among it).
//
// The format is specified in cocoonfs-format.md of the cocoon-tpm project
// (cocoon-tpm-storage 0.1.4); where the specification and that release's
// code disagree, this package follows the code, which is what the SVSM
// runs:
//
//   - the root key context carries the block cipher mode (TPM_ALG_CBC)
//     between the hash identifiers and the block cipher,
//   - the root key is as long as a kdf_hash_alg digest,
//   - inode key subdomains are 1 for extents lists and 2 for data.
//
// Everything the Reader returns has been authenticated through the
// filesystem's authentication tree. The Writer produces freshly formatted
// images holding a given set of inodes.
package cocoonfs

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	_ "crypto/sha256" // hash implementations for the layouts
	_ "crypto/sha512"
	"encoding/binary"
	"fmt"
)

// TCG algorithm identifiers used by the format.
const (
	AlgAES    uint16 = 0x0006
	AlgSHA256 uint16 = 0x000b
	AlgSHA384 uint16 = 0x000c
	AlgSHA512 uint16 = 0x000d
	AlgCBC    uint16 = 0x0042
)

// FormatVersion is the only on-disk format version this package knows.
const FormatVersion = 1

// layoutLen is the encoded length of the image layout.
const layoutLen = 21

// Layout is the set of filesystem configuration parameters ("image
// layout") recorded in the static image header.
type Layout struct {
	AllocBlock128Log2        uint8 // Allocation Block size, log2 in units of 128 B
	IOBlockAllocBlocksLog2   uint8 // IO Block, log2 in Allocation Blocks
	AuthTreeNodeIOBlocksLog2 uint8 // authentication tree node, log2 in IO Blocks
	AuthTreeDataBlockLog2    uint8 // Authentication Tree Data Block, log2 in Allocation Blocks
	BitmapFileBlockLog2      uint8 // allocation bitmap file block, log2 in Allocation Blocks
	IndexLeafLog2            uint8 // inode index leaf node, log2 in Allocation Blocks
	IndexInternalLog2        uint8 // inode index internal node, log2 in Allocation Blocks

	AuthTreeNodeHash   uint16
	AuthTreeDataHMAC   uint16
	AuthTreeRootHMAC   uint16
	PreauthHMAC        uint16
	KDFHash            uint16
	BlockCipher        uint16
	BlockCipherKeyBits uint16
}

// DefaultLayout returns the layout of the upstream SVSM documentation for
// a security strength of 128, 192 or 256 bits: 128-byte Allocation
// Blocks, 512-byte IO Blocks, AES-CBC with a key of that size. Strength
// 128 uses SHA-256 throughout; 192 and 256 authenticate the data with
// SHA-384 and SHA-512, as the reference tool's -t option does.
func DefaultLayout(strength int) (Layout, error) {
	l := Layout{
		AllocBlock128Log2:        0,
		IOBlockAllocBlocksLog2:   2,
		AuthTreeNodeIOBlocksLog2: 1,
		AuthTreeDataBlockLog2:    2,
		BitmapFileBlockLog2:      2,
		IndexLeafLog2:            0,
		IndexInternalLog2:        0,
		AuthTreeNodeHash:         AlgSHA256,
		AuthTreeDataHMAC:         AlgSHA256,
		AuthTreeRootHMAC:         AlgSHA256,
		PreauthHMAC:              AlgSHA256,
		KDFHash:                  AlgSHA256,
		BlockCipher:              AlgAES,
	}
	switch strength {
	case 128:
		l.BlockCipherKeyBits = 128
	case 192:
		l.BlockCipherKeyBits = 192
		l.AuthTreeNodeHash, l.AuthTreeDataHMAC = AlgSHA384, AlgSHA384
	case 256:
		l.BlockCipherKeyBits = 256
		l.AuthTreeNodeHash, l.AuthTreeDataHMAC = AlgSHA512, AlgSHA512
	default:
		return Layout{}, fmt.Errorf("security strength %d: want 128, 192 or 256", strength)
	}
	return l, nil
}

// Encode returns the 21-byte encoded image layout.
func (l Layout) Encode() []byte {
	b := make([]byte, layoutLen)
	b[0] = l.AllocBlock128Log2
	b[1] = l.IOBlockAllocBlocksLog2
	b[2] = l.AuthTreeNodeIOBlocksLog2
	b[3] = l.AuthTreeDataBlockLog2
	b[4] = l.BitmapFileBlockLog2
	b[5] = l.IndexLeafLog2
	b[6] = l.IndexInternalLog2
	binary.BigEndian.PutUint16(b[7:], l.AuthTreeNodeHash)
	binary.BigEndian.PutUint16(b[9:], l.AuthTreeDataHMAC)
	binary.BigEndian.PutUint16(b[11:], l.AuthTreeRootHMAC)
	binary.BigEndian.PutUint16(b[13:], l.PreauthHMAC)
	binary.BigEndian.PutUint16(b[15:], l.KDFHash)
	binary.BigEndian.PutUint16(b[17:], l.BlockCipher)
	binary.BigEndian.PutUint16(b[19:], l.BlockCipherKeyBits)
	return b
}

// decodeLayout parses and validates an encoded image layout.
func decodeLayout(b []byte) (Layout, error) {
	if len(b) != layoutLen {
		return Layout{}, fmt.Errorf("image layout: %d bytes, want %d", len(b), layoutLen)
	}
	l := Layout{
		AllocBlock128Log2:        b[0],
		IOBlockAllocBlocksLog2:   b[1],
		AuthTreeNodeIOBlocksLog2: b[2],
		AuthTreeDataBlockLog2:    b[3],
		BitmapFileBlockLog2:      b[4],
		IndexLeafLog2:            b[5],
		IndexInternalLog2:        b[6],
		AuthTreeNodeHash:         binary.BigEndian.Uint16(b[7:]),
		AuthTreeDataHMAC:         binary.BigEndian.Uint16(b[9:]),
		AuthTreeRootHMAC:         binary.BigEndian.Uint16(b[11:]),
		PreauthHMAC:              binary.BigEndian.Uint16(b[13:]),
		KDFHash:                  binary.BigEndian.Uint16(b[15:]),
		BlockCipher:              binary.BigEndian.Uint16(b[17:]),
		BlockCipherKeyBits:       binary.BigEndian.Uint16(b[19:]),
	}
	return l, l.Validate()
}

// Validate checks the layout against the format's constraints and the
// algorithms this package implements (those the SVSM has).
func (l Layout) Validate() error {
	ab := uint(l.AllocBlock128Log2) + 7
	switch {
	case ab > 20:
		return fmt.Errorf("image layout: Allocation Block of 2^%d bytes is not supported", ab)
	case l.IOBlockAllocBlocksLog2 > 6:
		return fmt.Errorf("image layout: IO Block of 2^%d Allocation Blocks exceeds the format's 64", l.IOBlockAllocBlocksLog2)
	case l.AuthTreeDataBlockLog2 > 6:
		return fmt.Errorf("image layout: Authentication Tree Data Block of 2^%d Allocation Blocks exceeds the format's 64", l.AuthTreeDataBlockLog2)
	case l.IndexLeafLog2 > 6 || l.IndexInternalLog2 > 6:
		return fmt.Errorf("image layout: inode index nodes larger than 64 Allocation Blocks")
	case ab+uint(l.IOBlockAllocBlocksLog2)+uint(l.AuthTreeNodeIOBlocksLog2) > 24:
		return fmt.Errorf("image layout: authentication tree nodes of 2^%d bytes are not supported", ab+uint(l.IOBlockAllocBlocksLog2)+uint(l.AuthTreeNodeIOBlocksLog2))
	case ab+uint(l.BitmapFileBlockLog2) > 24:
		return fmt.Errorf("image layout: allocation bitmap file blocks of 2^%d bytes are not supported", ab+uint(l.BitmapFileBlockLog2))
	}
	for _, h := range []uint16{l.AuthTreeNodeHash, l.AuthTreeDataHMAC, l.AuthTreeRootHMAC, l.PreauthHMAC, l.KDFHash} {
		if _, err := hashOf(h); err != nil {
			return err
		}
	}
	if l.BlockCipher != AlgAES {
		return fmt.Errorf("image layout: block cipher 0x%04x is not supported (the SVSM has AES only)", l.BlockCipher)
	}
	switch l.BlockCipherKeyBits {
	case 128, 192, 256:
	default:
		return fmt.Errorf("image layout: AES key size %d is invalid", l.BlockCipherKeyBits)
	}
	// The bitmap file must hold at least one word per block, i.e. an
	// encrypted block needs room for IV plus one cipher block.
	if 128<<l.AllocBlock128Log2<<l.BitmapFileBlockLog2 < 2*aes.BlockSize+8 {
		return fmt.Errorf("image layout: allocation bitmap file blocks too small")
	}
	return nil
}

// hashOf maps a TCG hash identifier to its implementation.
func hashOf(alg uint16) (crypto.Hash, error) {
	switch alg {
	case AlgSHA256:
		return crypto.SHA256, nil
	case AlgSHA384:
		return crypto.SHA384, nil
	case AlgSHA512:
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("image layout: hash algorithm 0x%04x is not supported (the SVSM has SHA-256, SHA-384 and SHA-512)", alg)
}

// HashName names a TCG hash identifier.
func HashName(alg uint16) string {
	switch alg {
	case AlgSHA256:
		return "SHA-256"
	case AlgSHA384:
		return "SHA-384"
	case AlgSHA512:
		return "SHA-512"
	}
	return fmt.Sprintf("0x%04x", alg)
}

func mustHash(alg uint16) crypto.Hash {
	h, err := hashOf(alg)
	if err != nil {
		panic(err)
	}
	return h
}

func digestLen(alg uint16) int { return mustHash(alg).Size() }

// Derived sizes, in bytes unless named otherwise.
func (l Layout) allocBlockSize() int { return 128 << l.AllocBlock128Log2 }

// IOBlockSize is the unit the image size is a whole number of.
func (l Layout) IOBlockSize() int         { return l.allocBlockSize() << l.IOBlockAllocBlocksLog2 }
func (l Layout) bitmapFileBlockSize() int { return l.allocBlockSize() << l.BitmapFileBlockLog2 }
func (l Layout) leafNodeSize() int        { return l.allocBlockSize() << l.IndexLeafLog2 }
func (l Layout) internalNodeSize() int    { return l.allocBlockSize() << l.IndexInternalLog2 }
func (l Layout) blockCipherKeyLen() int   { return int(l.BlockCipherKeyBits) / 8 }

// ioAlignLog2 is log2 of the larger of the IO Block and the Authentication
// Tree Data Block, in Allocation Blocks.
func (l Layout) ioAlignLog2() uint {
	return max(uint(l.IOBlockAllocBlocksLog2), uint(l.AuthTreeDataBlockLog2))
}

// integrityLen is the length of an extent integrity protection section.
func (l Layout) integrityLen() int {
	return checksumLen + 1 + checksumLen*int(l.IOBlockAllocBlocksLog2+l.AllocBlock128Log2)
}

func (l Layout) newCipher(key []byte) cipher.Block {
	c, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	return c
}
