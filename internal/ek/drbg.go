package ek

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
)

// The TCG reference code's derivation function (DfStart/DfUpdate/DfCompute/
// DfEnd in CryptRand.c). It is not SP 800-90A Block_Cipher_df: a single
// chained pass over the input with a fixed key 00..1f.
type df struct {
	aes   cipher.Block
	c     [3][16]byte
	b     [16]byte
	cnt   int
	total uint32
}

var dfKey = func() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}()

func newDF(total int) *df {
	blk, _ := aes.NewCipher(dfKey)
	d := &df{aes: blk, total: uint32(total)}
	for k := 0; k < 3; k++ {
		d.c[k][3] = byte(k)
	}
	d.compute()
	binary.BigEndian.PutUint32(d.c[0][0:], d.total)
	binary.BigEndian.PutUint32(d.c[0][4:], 48)
	d.cnt = 4
	return d
}

func (d *df) compute() {
	var t [16]byte
	for k := 0; k < 3; k++ {
		for i := range t {
			t[i] ^= d.c[k][i] ^ d.b[i]
		}
		d.aes.Encrypt(d.c[k][:], t[:])
	}
	d.b = [16]byte{}
	d.cnt = 0
}

func (d *df) update(data []byte) {
	for _, x := range data {
		d.b[d.cnt] = x
		d.cnt++
		if d.cnt == 16 {
			d.compute()
		}
	}
}

func (d *df) end() []byte {
	d.b[d.cnt] = 0x80
	d.cnt++
	d.compute()
	out := make([]byte, 0, 48)
	for k := 0; k < 3; k++ {
		out = append(out, d.c[k][:]...)
	}
	return out
}

// seedMaterial runs the derivation function over the concatenated inputs.
func seedMaterial(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	d := newDF(n)
	for _, p := range parts {
		d.update(p)
	}
	return d.end()
}

// DRBG is the reference code's AES-256 CTR-DRBG (DRBG_STATE).
type DRBG struct {
	K [32]byte
	V [16]byte
	// Trace, when set, receives every Generate output (for tests).
	Trace func(out []byte)
	blk   cipher.Block
	draws int // Generate calls so far
}

func (r *DRBG) incV() {
	for i := 15; i >= 0; i-- {
		r.V[i]++
		if r.V[i] != 0 {
			return
		}
	}
}

func (r *DRBG) update(provided []byte) {
	var t [48]byte
	for i := 0; i < 3; i++ {
		r.incV()
		r.blk.Encrypt(t[16*i:], r.V[:])
	}
	for i := range provided {
		t[i] ^= provided[i]
	}
	copy(r.K[:], t[:32])
	copy(r.V[:], t[32:])
	r.blk, _ = aes.NewCipher(r.K[:])
}

// NewDRBG instantiates the DRBG as DRBG_InstantiateSeeded does.
func NewDRBG(seed, purpose, name, additional []byte) *DRBG {
	r := &DRBG{}
	r.blk, _ = aes.NewCipher(r.K[:])
	r.update(seedMaterial(seed, purpose, name, additional))
	return r
}

// Generate returns n bytes and then updates the state, as DRBG_Generate.
func (r *DRBG) Generate(n int) []byte {
	out := make([]byte, (n+15)/16*16)
	for i := 0; i < len(out); i += 16 {
		r.incV()
		r.blk.Encrypt(out[i:], r.V[:])
	}
	out = out[:n]
	r.draws++
	r.update(nil)
	if r.Trace != nil {
		r.Trace(out)
	}
	return out
}

// AdditionalData stirs data into the state (DRBG_AdditionalData).
func (r *DRBG) AdditionalData(data []byte) {
	r.update(seedMaterial(data))
}
