package ek

import (
	"crypto/sha512"
	"encoding/binary"
	"testing"
)

func benchSeed(i int) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	s := sha512.Sum512(b[:])
	return s[:]
}

func benchDerive(b *testing.B, alg Alg, mode CandidateMode) {
	for i := 0; i < b.N; i++ {
		if _, err := Derive(benchSeed(i%100), alg, mode, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// 100 distinct seeds in rotation: the per-seed cost varies with how many
// sieve positions the prime search tries.
func BenchmarkDeriveRSA2048PoC(b *testing.B)  { benchDerive(b, RSA2048, Reversed1_83) }
func BenchmarkDeriveRSA20482026(b *testing.B) { benchDerive(b, RSA2048, Reversed1_84) }
func BenchmarkDeriveECCP256(b *testing.B)     { benchDerive(b, ECCP256, Reversed1_84) }
