package cocoonfs

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
)

const ivLen = aes.BlockSize

// blockPayloadLen is the payload an encrypted block of n bytes holds.
func blockPayloadLen(n int) int { return (n - ivLen) / aes.BlockSize * aes.BlockSize }

// decryptBlock decrypts an encrypted block: IV, then CBC ciphertext of the
// payload (which fills the block but for less than one cipher block).
func decryptBlock(c cipher.Block, b []byte) []byte {
	n := blockPayloadLen(len(b))
	out := make([]byte, n)
	cipher.NewCBCDecrypter(c, b[:ivLen]).CryptBlocks(out, b[ivLen:ivLen+n])
	return out
}

// encryptBlock encrypts payload (a multiple of the cipher block, at most
// blockPayloadLen(size)) into a size-byte encrypted block: random IV,
// ciphertext, random fill.
func encryptBlock(c cipher.Block, payload []byte, size int, rnd func([]byte)) []byte {
	b := make([]byte, size)
	rnd(b[:ivLen])
	cipher.NewCBCEncrypter(c, b[:ivLen]).CryptBlocks(b[ivLen:ivLen+len(payload)], payload)
	rnd(b[ivLen+len(payload):])
	return b
}

var errPadding = errors.New("invalid padding after decryption")

// decryptExtents decrypts the "encrypted extents" format: IV at the start
// of the concatenated extents' data, CBC ciphertext of the payload with
// PKCS#7 padding followed by zero blocks.
func decryptExtents(c cipher.Block, data []byte) ([]byte, error) {
	if len(data) < 2*ivLen || (len(data)-ivLen)%aes.BlockSize != 0 {
		return nil, errors.New("encrypted extents too short or misaligned")
	}
	pt := make([]byte, len(data)-ivLen)
	cipher.NewCBCDecrypter(c, data[:ivLen]).CryptBlocks(pt, data[ivLen:])
	return unpad(pt)
}

// unpad strips trailing zero cipher blocks and a PKCS#7 padding.
func unpad(pt []byte) ([]byte, error) {
	end := len(pt)
	for end >= aes.BlockSize && allZero(pt[end-aes.BlockSize:end]) {
		end -= aes.BlockSize
	}
	if end == 0 {
		return nil, errPadding
	}
	p := int(pt[end-1])
	if p == 0 || p > aes.BlockSize || p > end {
		return nil, errPadding
	}
	for _, v := range pt[end-p : end] {
		if int(v) != p {
			return nil, errPadding
		}
	}
	return pt[:end-p], nil
}

// encryptExtents encrypts payload into the "encrypted extents" format
// filling exactly n bytes (IV, PKCS#7-padded ciphertext, zero blocks
// encrypted on).
func encryptExtents(c cipher.Block, payload []byte, n int, rnd func([]byte)) []byte {
	out := make([]byte, n)
	rnd(out[:ivLen])
	pt := make([]byte, n-ivLen)
	copy(pt, payload)
	p := aes.BlockSize - len(payload)%aes.BlockSize
	for i := 0; i < p; i++ {
		pt[len(payload)+i] = byte(p)
	}
	cipher.NewCBCEncrypter(c, out[:ivLen]).CryptBlocks(out[ivLen:], pt)
	return out
}

// extentsCapacityNeeded is the encrypted size of a payload of n bytes.
func extentsCapacityNeeded(n int) int {
	return ivLen + (n/aes.BlockSize+1)*aes.BlockSize
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}
