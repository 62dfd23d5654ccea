package cocoonfs

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// Encrypted chained extents: each extent's plaintext is an encoded extent
// pointer to the next extent (NIL for the last) followed by a chunk of the
// payload; the CBC chain runs on across extents. The first extent is
//
//	[plain header] [inline HMAC] IV [padding] ciphertext
//
// and continuation extents are [inline HMAC] [padding] ciphertext, the
// ciphertext always ending at the extent's end. With inline
// authentication, each extent's HMAC covers its stored bytes (the first
// extent's own tag zeroed, a continuation's replaced by the previous tag),
// the chaining IV for continuations, the associated data and its length,
// the block cipher, and (continuation, 0, AUTH_SUBJECT_ID 5).

const authSubjectChainedExtents = 5

// chainedAuth describes the inline authentication of a chained entity.
type chainedAuth struct {
	mac hash.Hash // keyed, reset before each use
	aad []byte
}

// chainedPayloadLen is the ciphertext length of an extent of n bytes.
func chainedPayloadLen(n, hdr, tagLen int, first bool) int {
	h := tagLen
	if first {
		h += hdr + ivLen
	}
	return (n - h) / aes.BlockSize * aes.BlockSize
}

func cipherParams(l Layout) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, l.BlockCipher), l.BlockCipherKeyBits)
}

func (a *chainedAuth) tag(l Layout, ext []byte, hdr int, first bool, prevTag, iv []byte) []byte {
	n := a.mac.Size()
	a.mac.Reset()
	if first {
		a.mac.Write(ext[:hdr])
		a.mac.Write(make([]byte, n))
		a.mac.Write(ext[hdr+n:])
	} else {
		a.mac.Write(prevTag)
		a.mac.Write(ext[n:])
		a.mac.Write(iv)
	}
	a.mac.Write(a.aad)
	a.mac.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(a.aad))))
	a.mac.Write(cipherParams(l))
	cont := byte(0)
	if !first {
		cont = 1
	}
	a.mac.Write([]byte{cont, 0, authSubjectChainedExtents})
	return a.mac.Sum(nil)
}

// readChained decrypts a chained-extents entity starting at first. read
// returns an extent's bytes (already authenticated by the caller where the
// entity has no inline authentication). It returns the payload.
func readChained(l Layout, c cipher.Block, auth *chainedAuth, hdr int, first Extent, read func(Extent) ([]byte, error)) ([]byte, error) {
	var pt []byte
	var exts []Extent
	var prevTag, iv []byte
	tagLen := 0
	if auth != nil {
		tagLen = auth.mac.Size()
	}
	cur, ok := first, true
	for ok {
		if len(exts) > 1<<16 {
			return nil, errors.New("chained extents: list too long")
		}
		for _, e := range exts {
			if e.Begin < cur.End() && cur.Begin < e.End() {
				return nil, errors.New("chained extents: loop")
			}
		}
		exts = append(exts, cur)
		ext, err := read(cur)
		if err != nil {
			return nil, err
		}
		isFirst := len(exts) == 1
		n := chainedPayloadLen(len(ext), hdr, tagLen, isFirst)
		if n < 8 || (!isFirst && n == 8) {
			return nil, errors.New("chained extents: extent too short")
		}
		p := 0
		if isFirst {
			p = hdr
		}
		if auth != nil {
			want := auth.tag(l, ext, hdr, isFirst, prevTag, iv)
			if !hmac.Equal(want, ext[p:p+tagLen]) {
				return nil, errAuth
			}
			prevTag = want
		}
		if isFirst {
			iv = append([]byte(nil), ext[hdr+tagLen:hdr+tagLen+ivLen]...)
		}
		ct := ext[len(ext)-n:]
		out := make([]byte, n)
		cipher.NewCBCDecrypter(c, iv).CryptBlocks(out, ct)
		iv = append([]byte(nil), ct[n-aes.BlockSize:]...)
		var ind bool
		cur, ind, ok = decodeExtentPtr(binary.LittleEndian.Uint64(out))
		if ok && ind {
			return nil, errors.New("chained extents: indirect link")
		}
		pt = append(pt, out[8:]...)
	}
	payload, err := unpad(pt)
	if err != nil {
		return nil, fmt.Errorf("chained extents: %w", err)
	}
	return payload, nil
}

// writeChained encrypts payload into the chain exts (whose capacity must
// hold it plus a padding block); hdrBytes is the plain header of the first
// extent. It returns each extent's bytes.
func writeChained(l Layout, c cipher.Block, auth *chainedAuth, hdrBytes []byte, exts []Extent, payload []byte, rnd func([]byte)) [][]byte {
	ab := l.allocBlockSize()
	hdr := len(hdrBytes)
	tagLen := 0
	if auth != nil {
		tagLen = auth.mac.Size()
	}
	// The PKCS#7 padding aligns the last extent's plaintext (its next
	// pointer included) to the cipher block.
	rest := len(payload)
	for i, e := range exts[:len(exts)-1] {
		rest -= chainedPayloadLen(int(e.Len)*ab, hdr, tagLen, i == 0) - 8
	}
	p := aes.BlockSize - (8+rest)%aes.BlockSize
	padded := append(append([]byte(nil), payload...), make([]byte, p)...)
	for i := len(payload); i < len(padded); i++ {
		padded[i] = byte(p)
	}
	var out [][]byte
	var iv, prevTag []byte
	for i, e := range exts {
		ext := make([]byte, int(e.Len)*ab)
		first := i == 0
		n := chainedPayloadLen(len(ext), hdr, tagLen, first)
		pos := 0
		if first {
			copy(ext, hdrBytes)
			pos = hdr + tagLen
			iv = make([]byte, ivLen)
			rnd(iv)
			copy(ext[pos:], iv)
			pos += ivLen
		} else {
			pos = tagLen
		}
		rnd(ext[pos : len(ext)-n])
		pt := make([]byte, n)
		next := nilPtr
		if i+1 < len(exts) {
			next = encodeExtentPtr(exts[i+1], false)
		}
		binary.LittleEndian.PutUint64(pt, next)
		k := copy(pt[8:], padded)
		padded = padded[k:]
		ct := ext[len(ext)-n:]
		cipher.NewCBCEncrypter(c, iv).CryptBlocks(ct, pt)
		if auth != nil {
			t := auth.tag(l, ext, hdr, first, prevTag, iv)
			if first {
				copy(ext[hdr:], t)
			} else {
				copy(ext, t)
			}
			prevTag = t
		}
		iv = append([]byte(nil), ct[n-aes.BlockSize:]...)
		out = append(out, ext)
	}
	if len(padded) != 0 {
		panic("cocoonfs: chained extents too small for payload")
	}
	return out
}

// extentsListAuth returns the inline authentication of the extents list of
// the authentication tree or allocation bitmap inode.
func extentsListAuth(k *keys, inode uint64) *chainedAuth {
	aad := binary.LittleEndian.AppendUint64(nil, inode)
	aad = append(aad, 0, 2)
	return &chainedAuth{mac: k.hmac(k.l.PreauthHMAC, inode, subdomainExtentsList, purposePreauth), aad: aad}
}
