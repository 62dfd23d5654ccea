// Package xts encrypts and decrypts 512-byte sectors with XTS-AES-256 the way
// the COCONUT-SVSM block layer does: a 64-byte key (key[0:32] data key,
// key[32:64] tweak key) and a tweak of 0 for every sector.
package xts

import (
	"crypto/aes"
	"errors"
	"fmt"

	"golang.org/x/crypto/xts"
)

const (
	// KeySize is the length of an SVSM state key in bytes.
	KeySize = 64
	// SectorSize is the unit of encryption.
	SectorSize = 512
)

// Cipher is a sector cipher bound to one key.
type Cipher struct {
	c *xts.Cipher
}

// New returns a Cipher for a 64-byte key.
func New(key []byte) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("xts: key must be %d bytes, got %d", KeySize, len(key))
	}
	c, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		return nil, err
	}
	return &Cipher{c: c}, nil
}

var errSector = errors.New("xts: data must be a whole number of 512-byte sectors")

// EncryptSectors encrypts src (a multiple of 512 bytes) into dst, each
// sector independently with tweak 0. dst and src may be the same slice.
func (c *Cipher) EncryptSectors(dst, src []byte) error {
	if len(src)%SectorSize != 0 || len(dst) < len(src) {
		return errSector
	}
	for off := 0; off < len(src); off += SectorSize {
		c.c.Encrypt(dst[off:off+SectorSize], src[off:off+SectorSize], 0)
	}
	return nil
}

// DecryptSectors is the inverse of EncryptSectors.
func (c *Cipher) DecryptSectors(dst, src []byte) error {
	if len(src)%SectorSize != 0 || len(dst) < len(src) {
		return errSector
	}
	for off := 0; off < len(src); off += SectorSize {
		c.c.Decrypt(dst[off:off+SectorSize], src[off:off+SectorSize], 0)
	}
	return nil
}
