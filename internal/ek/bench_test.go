package ek

import (
	"crypto/sha512"
	"encoding/binary"
	"sort"
	"testing"
	"time"
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

// BenchmarkRSA100Seeds times each of 100 seeds once and reports the median
// and spread of one RSA EK derivation (the work is fixed; b.N is ignored).
func BenchmarkRSA100Seeds(b *testing.B) {
	for _, m := range []struct {
		name string
		mode CandidateMode
	}{{"poc", Reversed1_83}, {"2026", Reversed1_84}} {
		b.Run(m.name, func(b *testing.B) {
			var d []float64
			for s := 0; s < 100; s++ {
				t0 := time.Now()
				if _, err := Derive(benchSeed(s), RSA2048, m.mode, nil); err != nil {
					b.Fatal(err)
				}
				d = append(d, float64(time.Since(t0).Microseconds())/1000)
			}
			sort.Float64s(d)
			q := func(f float64) float64 { return d[int(f*float64(len(d)-1))] }
			b.ReportMetric(q(0.5), "ms-median")
			b.ReportMetric(q(0.1), "ms-p10")
			b.ReportMetric(q(0.9), "ms-p90")
			b.ReportMetric(d[len(d)-1], "ms-max")
			b.ReportMetric(0, "ns/op")
		})
	}
}
