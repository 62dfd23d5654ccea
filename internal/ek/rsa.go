package ek

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"runtime"
	"sort"
	"sync"
)

// CandidateMode is how a build turns DRBG bytes into a prime candidate
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

// The sieve prime tables of PrimeSelectWithSieve (CryptPrimeSieve.c): it
// sieves with the odd primes up to a limit that depends on the bit length
// of the candidate, taken from the 65537-entry prime table of PrimeData.c.
// 3, 5 and 7 are left out: the initial field pattern covers them.
const (
	sieveLimit512  = 8167  // candidates of <= 512 bits: the first 1024 odd primes
	sieveLimit1024 = 38891 // <= 1024 bits: the first 4096 odd primes
	sieveLimitAll  = 65537 // larger: every odd prime of the table (s_LastPrimeInTable)
)

var (
	sievePrimesAll = oddPrimesUpTo(sieveLimitAll)
	// sievePrimes is the table for 1024-bit candidates (RSA-2048 primes).
	sievePrimes    = sievePrimesAll[:sort.Search(len(sievePrimesAll), func(i int) bool { return sievePrimesAll[i] > sieveLimit1024 })]
	sievePrimes512 = sievePrimesAll[:sort.Search(len(sievePrimesAll), func(i int) bool { return sievePrimesAll[i] > sieveLimit512 })]
)

// oddPrimesUpTo returns the primes from 11 up to limit.
func oddPrimesUpTo(limit int) []uint32 {
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
}

// sievePrimesFor returns the sieve primes for a candidate of the given bit
// length (the RsaAdjustPrimeLimit calls of PrimeSelectWithSieve).
func sievePrimesFor(bitLen int) []uint32 {
	switch {
	case bitLen <= 512:
		return sievePrimes512
	case bitLen <= 1024:
		return sievePrimes
	}
	return sievePrimesAll
}

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

// candidate converts a draw of bits/8 bytes into an adjusted prime
// candidate of bits bits (TpmMath_GetRandomBits, then
// RsaAdjustPrimeCandidate). Prime sizes are multiples of 32 bits, so the
// 1.83 mask, ~(0xFF >> 0), always clears the whole most significant byte.
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
	// [0xB5050000, 0xFFFFFFFF] so that p*q has exactly twice the bits.
	buf[len(buf)-1] |= 1
	msw := binary.BigEndian.Uint32(buf)
	adj := (msw>>16)*0x4AFB + ((msw&0xFFFF)*0x4AFB)>>16 + 0xB5050000
	binary.BigEndian.PutUint32(buf, adj)
	return buf
}

// modSmall returns x mod p for a big-endian byte string whose length is a
// multiple of 4.
func modSmall(x []byte, p uint32) uint32 {
	var r uint64
	for i := 0; i < len(x); i += 4 {
		r = (r<<32 | uint64(binary.BigEndian.Uint32(x[i:]))) % uint64(p)
	}
	return uint32(r)
}

// sieve returns the sieve base B and the field of survivors for C
// (PrimeSieve). The field has the same size for every prime size; the sieve
// primes depend on the bit length of C.
func sieve(c *big.Int) (*big.Int, *[fieldBytes]byte, int) {
	primes := sievePrimesFor(c.BitLen())
	adjust := new(big.Int).Mod(c, big.NewInt(105)).Int64()
	if adjust&1 == 1 {
		adjust += 105
	}
	base := new(big.Int).Sub(c, big.NewInt(adjust))
	bb := base.FillBytes(make([]byte, (base.BitLen()+31)/32*4))
	field := initialField
	for _, p := range primes {
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

// mrParams are the values Miller-Rabin derives from the tested number.
type mrParams struct {
	w, wm1, m *big.Int
	a         int
	rounds    int
	nbytes    int
	bitLen    int
}

// newMR sets up MillerRabin (CryptPrime.c) for w. The round count is
// MillerRabinRounds of the bit length of w: 8 below 511 bits, 5 below 1536
// (1024-bit primes of RSA-2048), 4 from 1536 on (RSA-3072 and RSA-4096).
func newMR(w *big.Int) *mrParams {
	p := &mrParams{w: w, bitLen: w.BitLen(), rounds: 4}
	switch {
	case p.bitLen < 511:
		p.rounds = 8
	case p.bitLen < 1536:
		p.rounds = 5
	}
	p.wm1 = new(big.Int).Sub(w, one)
	p.a = int(p.wm1.TrailingZeroBits())
	p.m = new(big.Int).Rsh(p.wm1, uint(p.a))
	p.nbytes = (p.bitLen + 7) / 8
	return p
}

// witness draws b with 1 < b < w-1 (TpmMath_GetRandomInteger, drawing
// again while out of range).
func (p *mrParams) witness(r *DRBG) *big.Int {
	b := new(big.Int)
	for {
		raw := r.Generate(p.nbytes)
		if extra := p.nbytes*8 - p.bitLen; extra > 0 {
			raw[0] &= byte(0xFF >> extra)
		}
		b.SetBytes(raw)
		if b.Cmp(one) > 0 && b.Cmp(p.wm1) < 0 {
			return b
		}
	}
}

func (p *mrParams) expW(b *big.Int) *big.Int { return new(big.Int).Exp(b, p.m, p.w) }

// passes reports whether w survives a round whose witness gave z = b^m.
func (p *mrParams) passes(z *big.Int) bool {
	if z.Cmp(one) == 0 || z.Cmp(p.wm1) == 0 {
		return true
	}
	z = new(big.Int).Set(z)
	for j := 1; j < p.a; j++ {
		z.Mul(z, z).Mod(z, p.w)
		if z.Cmp(p.wm1) == 0 {
			return true
		}
		if z.Cmp(one) == 0 {
			return false
		}
	}
	return false
}

// millerRabin tests w with witnesses drawn from r, as MillerRabin in the
// reference code's CryptPrime.c.
func millerRabin(w *big.Int, r *DRBG) bool {
	p := newMR(w)
	for round := 0; round < p.rounds; round++ {
		if !p.passes(p.expW(p.witness(r))) {
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
	be := big.NewInt(int64(e))
	rm := new(big.Int)
	// next returns the next position to try, nil when all were tried, and
	// whether it gets a Miller-Rabin test (positions with T mod e in {0,1}
	// are skipped without one).
	var try tryInfo
	next := func() (*big.Int, bool) {
		if ones <= 0 {
			return nil, false
		}
		n := int(first%uint32(ones)) + 1
		j := nthSetBit(field, n)
		field[j>>3] &^= 1 << (j & 7)
		ones--
		t := new(big.Int).Lsh(big.NewInt(int64(j)), 1)
		t.Add(t, base)
		rv := rm.Mod(t, be).Int64()
		try = tryInfo{First: first, N: n, Bit: j, ModE: rv}
		return t, rv != 0 && rv != 1
	}
	if r.Trace != nil || parallelism < 2 {
		for {
			t, test := next()
			if t == nil {
				return nil
			}
			before := r.draws
			prime := test && millerRabin(t, r)
			if onTry != nil {
				try.MR, try.Draws = prime, r.draws-before
				onTry(try)
			}
			if prime {
				return t
			}
		}
	}
	return selectSpeculative(next, r)
}

// tryInfo describes one sieve position tried, for tests.
type tryInfo struct {
	First  uint32
	N, Bit int
	ModE   int64
	MR     bool
	Draws  int
}

// onTry, when set (by tests), sees every position the sequential search
// tries.
var onTry func(tryInfo)

// remainingRounds runs rounds 2.. of a position that passed its first
// round. A prime passes every round, consuming exactly one witness per
// round, so the witnesses are drawn ahead and the exponentiations run in
// parallel; at the first failing round r is set back to the state right
// after that round's witness, as the sequential test would leave it.
func (p *mrParams) remainingRounds(r *DRBG) bool {
	n := p.rounds - 1
	zs := make([]*big.Int, n)
	after := make([]DRBG, n)
	for i := range zs {
		zs[i] = p.witness(r)
		after[i] = *r
	}
	var wg sync.WaitGroup
	for i := range zs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			zs[i] = p.expW(zs[i])
		}(i)
	}
	wg.Wait()
	for i, z := range zs {
		if !p.passes(z) {
			*r = after[i]
			return false
		}
	}
	return true
}

// parallelism is how many first-round exponentiations run at once.
var parallelism = runtime.GOMAXPROCS(0)

// speculative is a position tested ahead of time on the assumption that
// every earlier position fails its first Miller-Rabin round.
type speculative struct {
	p     *mrParams
	z     *big.Int
	after DRBG // the DRBG right after this position's first witness
}

// selectSpeculative finds the same prime and leaves r in the same state as
// the sequential loop, but computes the first-round exponentiations of
// several positions at once. A composite fails its first round with
// overwhelming probability and then has consumed exactly its first witness,
// so the witnesses of the following positions are known in advance. When a
// position survives its first round, its other rounds run from the DRBG
// state after its first witness; if it then turns out composite, the
// positions drawn after it are tested again, sequentially, from the right
// DRBG state.
func selectSpeculative(next func() (*big.Int, bool), r *DRBG) *big.Int {
	batch := 2 * parallelism
	for {
		var specs []*speculative
		for len(specs) < batch {
			t, test := next()
			if t == nil {
				break
			}
			if test {
				p := newMR(t)
				specs = append(specs, &speculative{p: p, z: p.witness(r), after: *r})
			}
		}
		if len(specs) == 0 {
			return nil
		}
		var wg sync.WaitGroup
		for _, s := range specs {
			wg.Add(1)
			go func(s *speculative) {
				defer wg.Done()
				s.z = s.p.expW(s.z)
			}(s)
		}
		wg.Wait()
		for i, s := range specs {
			if !s.p.passes(s.z) {
				continue
			}
			*r = s.after
			if s.p.remainingRounds(r) {
				return s.p.w
			}
			for _, later := range specs[i+1:] {
				if millerRabin(later.p.w, r) {
					return later.p.w
				}
			}
			break
		}
	}
}

// generatePrime is TpmRsa_GeneratePrimeForRSA: one DRBG draw of bits/8
// bytes per candidate until the sieve search around a candidate finds a
// prime.
func generatePrime(r *DRBG, bits int, e uint32, mode CandidateMode) *big.Int {
	for {
		c := new(big.Int).SetBytes(candidate(r.Generate(bits/8), mode))
		if p := selectWithSieve(c, e, r); p != nil {
			return p
		}
	}
}

// rsaModulus runs the prime search of CryptRsaGenerateKey for a modulus of
// keyBits bits (primes of keyBits/2 bits) and returns n as keyBits/8
// big-endian bytes and the primes in generation order.
func rsaModulus(r *DRBG, keyBits int, e uint32, mode CandidateMode) ([]byte, []*big.Int, error) {
	var q *big.Int
	var primes []*big.Int
	for i := 1; i != 100; i++ {
		p := generatePrime(r, keyBits/2, e, mode)
		primes = append(primes, p)
		if q == nil {
			q = p
			continue
		}
		// The same 2^100 distance for every key size.
		if new(big.Int).Sub(p, q).Abs(new(big.Int).Sub(p, q)).BitLen()-1 < 100 {
			continue
		}
		n := new(big.Int).Mul(p, q)
		if n.BitLen() != keyBits {
			return nil, nil, fmt.Errorf("ek: RSA modulus does not have %d bits", keyBits)
		}
		return n.FillBytes(make([]byte, keyBits/8)), primes, nil
	}
	return nil, nil, errors.New("ek: RSA key generation found no key (TPM_RC_NO_RESULT)")
}
