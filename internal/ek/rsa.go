package ek

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
)

// CandidateMode is how a build turns 128 DRBG bytes into a prime candidate
// (TpmMath_GetRandomBits and its predecessors).
type CandidateMode int

const (
	// Reversed1_84 reverses the bytes and keeps them all (TCG TPM with the
	// mask fix, svsm-2026).
	Reversed1_84 CandidateMode = iota
	// Reversed1_83 reverses the bytes and zeroes the most significant byte
	// (the mask bug of the 1.83 release, svsm-poc).
	Reversed1_83
	// BigEndianMS reads the bytes big-endian as they come (the older
	// Microsoft reference code in the go-tpm-tools simulator).
	BigEndianMS
)

// ModeByName maps the names TPM profiles use to candidate modes.
func ModeByName(name string) (CandidateMode, error) {
	switch name {
	case "tcg-1.83":
		return Reversed1_83, nil
	case "tcg-1.84":
		return Reversed1_84, nil
	case "ms-reference":
		return BigEndianMS, nil
	}
	return 0, fmt.Errorf("ek: unknown RSA candidate mode %q", name)
}

// sievePrimes are the odd primes from 11 up to 38891, the table the
// reference code uses for 1024-bit candidates (the first 4096 odd primes,
// less 3, 5 and 7, which the initial field pattern covers).
var sievePrimes = func() []uint32 {
	const limit = 38891
	comp := make([]bool, limit+1)
	var ps []uint32
	for i := 2; i <= limit; i++ {
		if comp[i] {
			continue
		}
		if i >= 11 {
			ps = append(ps, uint32(i))
		}
		for j := i * i; j <= limit; j += i {
			comp[j] = true
		}
	}
	return ps
}()

const (
	fieldBytes = 2048
	fieldBits  = fieldBytes * 8
)

// initialField has bit j set iff j is not a multiple of 3, 5 or 7.
var initialField = func() [fieldBytes]byte {
	var f [fieldBytes]byte
	for j := 0; j < fieldBits; j++ {
		if j%3 != 0 && j%5 != 0 && j%7 != 0 {
			f[j>>3] |= 1 << (j & 7)
		}
	}
	return f
}()

// candidate converts a 128-byte draw into an adjusted 1024-bit candidate.
func candidate(raw []byte, mode CandidateMode) []byte {
	buf := make([]byte, len(raw))
	switch mode {
	case BigEndianMS:
		copy(buf, raw)
	default:
		for i := range raw {
			buf[i] = raw[len(raw)-1-i]
		}
		if mode == Reversed1_83 {
			buf[0] = 0
		}
	}
	// RsaAdjustPrimeCandidate: force odd, scale the top 32 bits into
	// [0xB5050000, 0xFFFFFFFF] so that p*q has exactly 2048 bits.
	buf[len(buf)-1] |= 1
	msw := binary.BigEndian.Uint32(buf)
	adj := (msw>>16)*0x4AFB + ((msw&0xFFFF)*0x4AFB)>>16 + 0xB5050000
	binary.BigEndian.PutUint32(buf, adj)
	return buf
}

// modSmall returns x mod p for a big-endian byte string.
func modSmall(x []byte, p uint32) uint32 {
	var r uint64
	for i := 0; i < len(x); i += 4 {
		r = (r<<32 | uint64(binary.BigEndian.Uint32(x[i:]))) % uint64(p)
	}
	return uint32(r)
}

// sieve returns the sieve base B and the field of survivors for C.
func sieve(c *big.Int) (*big.Int, *[fieldBytes]byte, int) {
	adjust := new(big.Int).Mod(c, big.NewInt(105)).Int64()
	if adjust&1 == 1 {
		adjust += 105
	}
	base := new(big.Int).Sub(c, big.NewInt(adjust))
	bb := base.FillBytes(make([]byte, 128))
	field := initialField
	for _, p := range sievePrimes {
		r := modSmall(bb, p)
		var j uint32
		switch {
		case r == 0:
			j = 0
		case r&1 == 1:
			j = (p - r) / 2
		default:
			j = p - r/2
		}
		for ; j < fieldBits; j += p {
			field[j>>3] &^= 1 << (j & 7)
		}
	}
	ones := 0
	for _, b := range field {
		ones += bits.OnesCount8(b)
	}
	return base, &field, ones
}

// nthSetBit returns the index of the n-th (1-based) set bit.
func nthSetBit(f *[fieldBytes]byte, n int) int {
	for i, b := range f {
		c := bits.OnesCount8(b)
		if n > c {
			n -= c
			continue
		}
		for k := 0; k < 8; k++ {
			if b&(1<<k) != 0 {
				n--
				if n == 0 {
					return i*8 + k
				}
			}
		}
	}
	return -1
}

var one = big.NewInt(1)

// millerRabin tests w with witnesses drawn from r, as the reference code.
func millerRabin(w *big.Int, r *DRBG) bool {
	bitLen := w.BitLen()
	rounds := 4
	switch {
	case bitLen < 511:
		rounds = 8
	case bitLen < 1536:
		rounds = 5
	}
	wm1 := new(big.Int).Sub(w, one)
	a := int(wm1.TrailingZeroBits())
	m := new(big.Int).Rsh(wm1, uint(a))
	nbytes := (bitLen + 7) / 8
	b := new(big.Int)
	z := new(big.Int)
	for round := 0; round < rounds; round++ {
		for {
			raw := r.Generate(nbytes)
			if extra := nbytes*8 - bitLen; extra > 0 {
				raw[0] &= byte(0xFF >> extra)
			}
			b.SetBytes(raw)
			if b.Cmp(one) > 0 && b.Cmp(wm1) < 0 {
				break
			}
		}
		z.Exp(b, m, w)
		if z.Cmp(one) == 0 || z.Cmp(wm1) == 0 {
			continue
		}
		passed := false
		for j := 1; j < a; j++ {
			z.Mul(z, z).Mod(z, w)
			if z.Cmp(wm1) == 0 {
				passed = true
				break
			}
			if z.Cmp(one) == 0 {
				return false
			}
		}
		if !passed {
			return false
		}
	}
	return true
}

// selectWithSieve is PrimeSelectWithSieve: it tries the survivors of the
// sieve in the order the reference code picks them.
func selectWithSieve(c *big.Int, e uint32, r *DRBG) *big.Int {
	first := uint32(new(big.Int).And(c, big.NewInt(0xFFFFFFFF)).Uint64()) | 0x80000000
	base, field, ones := sieve(c)
	t := new(big.Int)
	be := big.NewInt(int64(e))
	rm := new(big.Int)
	for ; ones > 0; ones-- {
		n := int(first%uint32(ones)) + 1
		j := nthSetBit(field, n)
		t.Lsh(big.NewInt(int64(j)), 1).Add(t, base)
		rm.Mod(t, be)
		if rv := rm.Int64(); rv != 0 && rv != 1 && millerRabin(t, r) {
			return new(big.Int).Set(t)
		}
		field[j>>3] &^= 1 << (j & 7)
	}
	return nil
}

func generatePrime(r *DRBG, e uint32, mode CandidateMode) *big.Int {
	for {
		c := new(big.Int).SetBytes(candidate(r.Generate(128), mode))
		if p := selectWithSieve(c, e, r); p != nil {
			return p
		}
	}
}

// rsaModulus runs CryptRsaGenerateKey for 2048 bits and returns n as 256
// big-endian bytes.
func rsaModulus(r *DRBG, e uint32, mode CandidateMode) ([]byte, []*big.Int, error) {
	var q *big.Int
	var primes []*big.Int
	for i := 1; i != 100; i++ {
		p := generatePrime(r, e, mode)
		primes = append(primes, p)
		if q == nil {
			q = p
			continue
		}
		if new(big.Int).Sub(p, q).Abs(new(big.Int).Sub(p, q)).BitLen()-1 < 100 {
			continue
		}
		n := new(big.Int).Mul(p, q)
		if n.BitLen() != 2048 {
			return nil, nil, errors.New("ek: RSA modulus does not have 2048 bits")
		}
		return n.FillBytes(make([]byte, 256)), primes, nil
	}
	return nil, nil, errors.New("ek: RSA key generation found no key (TPM_RC_NO_RESULT)")
}
