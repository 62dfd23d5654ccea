package ek

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

type vecFile struct {
	Templates map[string]struct {
		TPMTPublicTemplate string `json:"tpmt_public_template"`
	} `json:"templates"`
	Vectors []struct {
		ID        string `json:"id"`
		EPSSize   int    `json:"eps_tpm2b_size"`
		EPSBuffer string `json:"eps_buffer_64"`
		EPSUsed   string `json:"eps_bytes_used"`
		Targets   map[string]struct {
			ShProof string `json:"nvchip_shProof"`
			EhProof string `json:"nvchip_ehProof"`
			RSA     keyVec `json:"rsa"`
			ECC     keyVec `json:"ecc"`
		} `json:"targets"`
	} `json:"vectors"`
}

type keyVec struct {
	Instantiate struct {
		Seed, Purpose, Name, Additional string
		DF                              string `json:"df_output_seed_material"`
		K                               string `json:"K_after_instantiate"`
		V                               string `json:"V_after_instantiate"`
	} `json:"drbg_instantiate"`
	DrawSizes    []int  `json:"keygen_draw_sizes"`
	TotalBytes   int    `json:"keygen_stream_total_bytes"`
	StreamSHA256 string `json:"keygen_stream_sha256"`
	First256     string `json:"stream_first256_concat"`
	After        struct {
		SeedValue string `json:"seedValue_draw"`
	} `json:"after_keygen"`
	Primes      []string `json:"primes_in_generation_order"`
	N           string   `json:"n"`
	Scalar      string   `json:"scalar_draw_40"`
	D, X, Y     string
	TPM2BPublic string `json:"tpm2b_public"`
	Name        string `json:"name"`
	Detail      []struct {
		Candidates []struct {
			Raw      string `json:"raw_draw"`
			Reversed string `json:"reversed_masked"`
			Adjusted string `json:"adjusted_candidate"`
			Base     string `json:"sieve_base"`
			Ones     int    `json:"ones"`
			FieldSHA string `json:"field_sha256"`
			First    string `json:"first"`
			Tried    []struct {
				N            int   `json:"n"`
				Bit          int   `json:"bit"`
				WitnessDraws int   `json:"witness_draws"`
				MR           bool  `json:"mr"`
				ModE         int64 `json:"mod_e"`
			} `json:"tried"`
		} `json:"candidates"`
	} `json:"prime_generation_detail"`
	Counts struct {
		Tried   []int `json:"sieve_positions_tried_per_prime"`
		MRCalls []int `json:"miller_rabin_calls_per_prime"`
		Rejects []int `json:"mod_e_rejects_per_prime"`
		Witness []int `json:"witness_draws_per_prime"`
	} `json:"counts"`
}

func loadVectors(t *testing.T) *vecFile {
	var v vecFile
	if err := json.Unmarshal(sharedvec.Read(t, "tpm/ek-vectors.json"), &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func unhex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var targets = map[string]CandidateMode{"poc": Reversed1_83, "upstream": Reversed1_84}

func TestTemplates(t *testing.T) {
	v := loadVectors(t)
	for key, alg := range map[string]Alg{"rsa_L1": RSA2048, "ecc_L2": ECCP256} {
		tm := Template(alg)
		got := hex.EncodeToString(tpm2.Marshal(&tm))
		if want := v.Templates[key].TPMTPublicTemplate; got != want {
			t.Errorf("%s template:\n got %s\nwant %s", key, got, want)
		}
	}
}

func eq(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n got %s\nwant %s", what, got, want)
	}
}

func TestVectors(t *testing.T) {
	v := loadVectors(t)
	for _, vec := range v.Vectors {
		eps := unhex(t, vec.EPSBuffer)[:vec.EPSSize]
		eq(t, vec.ID+" eps used", hex.EncodeToString(eps), vec.EPSUsed)
		for tname, mode := range targets {
			tv, ok := vec.Targets[tname]
			if !ok {
				continue
			}
			for alg, kv := range map[Alg]keyVec{RSA2048: tv.RSA, ECCP256: tv.ECC} {
				id := vec.ID + "/" + tname + "/" + string(alg)
				in := kv.Instantiate
				tm := Template(alg)
				eq(t, id+" templateName", hex.EncodeToString(name(&tm)), in.Name)
				eq(t, id+" purpose", hex.EncodeToString(purpose), in.Purpose)
				eq(t, id+" df", hex.EncodeToString(seedMaterial(eps, purpose, name(&tm))), in.DF)
				var stream []byte
				var sizes []int
				k, err := Derive(eps, alg, mode, &Options{
					Instantiated: func(r *DRBG) {
						eq(t, id+" K", hex.EncodeToString(r.K[:]), in.K)
						eq(t, id+" V", hex.EncodeToString(r.V[:]), in.V)
					},
					Trace: func(out []byte) { stream = append(stream, out...); sizes = append(sizes, len(out)) },
				})
				if err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				n := min(256, len(stream))
				eq(t, id+" first draws", hex.EncodeToString(stream[:n]), kv.First256)
				if len(sizes) != len(kv.DrawSizes) {
					t.Errorf("%s: %d draws, want %d", id, len(sizes), len(kv.DrawSizes))
				}
				if len(stream) != kv.TotalBytes {
					t.Errorf("%s: %d keygen bytes, want %d", id, len(stream), kv.TotalBytes)
				}
				sum := sha256.Sum256(stream)
				eq(t, id+" keygen stream sha256", hex.EncodeToString(sum[:]), kv.StreamSHA256)
				if alg == RSA2048 {
					for i, p := range k.Primes {
						if i < len(kv.Primes) {
							eq(t, id+" prime", hex.EncodeToString(p.Bytes()), kv.Primes[i])
						}
					}
					nb, _ := k.Public.Unique.RSA()
					eq(t, id+" n", hex.EncodeToString(nb.Buffer), kv.N)
				} else {
					eq(t, id+" scalar draw", hex.EncodeToString(stream), kv.Scalar)
					eq(t, id+" d", hex.EncodeToString(privateScalar(stream)), kv.D)
					pt, _ := k.Public.Unique.ECC()
					eq(t, id+" x", hex.EncodeToString(pt.X.Buffer), kv.X)
					eq(t, id+" y", hex.EncodeToString(pt.Y.Buffer), kv.Y)
				}
				eq(t, id+" TPM2B_PUBLIC", hex.EncodeToString(k.TPM2BPublic()), kv.TPM2BPublic)
				eq(t, id+" Name", hex.EncodeToString(k.Name), kv.Name)
				eq(t, id+" seedValue", hex.EncodeToString(k.SeedValue(unhex(t, tv.ShProof), unhex(t, tv.EhProof))), kv.After.SeedValue)
				// the parallel path (no trace) gives the same key and DRBG state
				fast, err := Derive(eps, alg, mode, nil)
				if err != nil {
					t.Fatal(err)
				}
				eq(t, id+" TPM2B_PUBLIC (parallel)", hex.EncodeToString(fast.TPM2BPublic()), kv.TPM2BPublic)
				eq(t, id+" seedValue (parallel)", hex.EncodeToString(fast.SeedValue(unhex(t, tv.ShProof), unhex(t, tv.EhProof))), kv.After.SeedValue)
			}
		}
	}
}

// Every sieve position tried, in order, with its Miller-Rabin outcome and
// DRBG consumption, and the per-prime counts.
func TestTriedPositions(t *testing.T) {
	v := loadVectors(t)
	defer func() { onTry = nil }()
	for _, vec := range v.Vectors {
		eps := unhex(t, vec.EPSBuffer)[:vec.EPSSize]
		for tname, mode := range targets {
			kv := vec.Targets[tname].RSA
			id := vec.ID + "/" + tname
			var got []tryInfo
			onTry = func(ti tryInfo) { got = append(got, ti) }
			if _, err := Derive(eps, RSA2048, mode, &Options{Trace: func([]byte) {}}); err != nil {
				t.Fatal(err)
			}
			i := 0
			for p, pd := range kv.Detail {
				tried, mr, rejects, draws := 0, 0, 0, 0
				for _, c := range pd.Candidates {
					for _, want := range c.Tried {
						if i >= len(got) {
							t.Fatalf("%s: only %d positions tried", id, len(got))
						}
						g := got[i]
						i++
						eq(t, id+" first", fmt.Sprintf("%08x", g.First), c.First)
						if g.N != want.N || g.Bit != want.Bit || g.ModE != want.ModE || g.MR != want.MR || g.Draws != want.WitnessDraws {
							t.Fatalf("%s prime %d try %d: got %+v want %+v", id, p, i, g, want)
						}
						tried++
						draws += g.Draws
						if g.ModE == 0 || g.ModE == 1 {
							rejects++
						} else {
							mr++
						}
					}
				}
				if tried != kv.Counts.Tried[p] || mr != kv.Counts.MRCalls[p] || rejects != kv.Counts.Rejects[p] || draws != kv.Counts.Witness[p] {
					t.Errorf("%s prime %d counts: tried %d mr %d rejects %d draws %d, want %v", id, p, tried, mr, rejects, draws, kv.Counts)
				}
			}
			if i != len(got) {
				t.Errorf("%s: %d positions tried, vectors list %d", id, len(got), i)
			}
		}
	}
}

// The candidate conversion and sieve of the first prime, checked on their
// own so a mismatch points at the step.
func TestPrimeCandidateSteps(t *testing.T) {
	v := loadVectors(t)
	for _, vec := range v.Vectors {
		for tname, mode := range targets {
			tv := vec.Targets[tname]
			for i, pd := range tv.RSA.Detail {
				for j, c := range pd.Candidates {
					id := vec.ID + "/" + tname
					rm := unhex(t, c.Raw)
					for k := range rm[:len(rm)/2] {
						rm[k], rm[len(rm)-1-k] = rm[len(rm)-1-k], rm[k]
					}
					if mode == Reversed1_83 {
						rm[0] = 0
					}
					if c.Reversed != "" { // not recorded for every vector
						eq(t, id+" reversed_masked", hex.EncodeToString(rm), c.Reversed)
					}
					adj := candidate(unhex(t, c.Raw), mode)
					eq(t, id+" adjusted", hex.EncodeToString(adj), c.Adjusted)
					base, field, ones := sieve(new(big.Int).SetBytes(adj))
					eq(t, id+" sieve base", hex.EncodeToString(base.Bytes()), c.Base)
					if ones != c.Ones {
						t.Errorf("%s prime %d cand %d: ones %d want %d", id, i, j, ones, c.Ones)
					}
					sum := sha256.Sum256(field[:])
					eq(t, id+" field sha256", hex.EncodeToString(sum[:]), c.FieldSHA)
				}
			}
		}
	}
}

// The speculative parallel prime search must agree with the sequential
// one on the key and on the DRBG state it leaves, for many seeds.
func TestParallelMatchesSequential(t *testing.T) {
	old := parallelism
	defer func() { parallelism = old }()
	parallelism = 3
	n := 16
	if testing.Short() {
		n = 4
	}
	proof := bytes.Repeat([]byte{9}, 64)
	for i := 0; i < n; i++ {
		eps := benchSeed(1000 + i)
		for _, mode := range []CandidateMode{Reversed1_83, Reversed1_84, BigEndianMS} {
			seq, _ := Derive(eps, RSA2048, mode, &Options{Trace: func([]byte) {}})
			par, _ := Derive(eps, RSA2048, mode, nil)
			if !bytes.Equal(seq.TPM2BPublic(), par.TPM2BPublic()) || !bytes.Equal(seq.SeedValue(proof, proof), par.SeedValue(proof, proof)) {
				t.Fatalf("seed %d mode %d: parallel and sequential differ", i, mode)
			}
		}
	}
}

func TestDifferentModesDiffer(t *testing.T) {
	eps := bytes.Repeat([]byte{7}, 64)
	a, _ := Derive(eps, RSA2048, Reversed1_83, nil)
	b, _ := Derive(eps, RSA2048, Reversed1_84, nil)
	if bytes.Equal(a.Name, b.Name) {
		t.Fatal("poc and 2026 RSA EKs must differ")
	}
	if n, _ := a.Public.Unique.RSA(); n.Buffer[0] != 0x80 {
		t.Error("poc moduli start with 0x80")
	}
	c, _ := Derive(eps, ECCP256, Reversed1_83, nil)
	d, _ := Derive(eps, ECCP256, Reversed1_84, nil)
	if !bytes.Equal(c.Name, d.Name) {
		t.Fatal("ECC EKs must not depend on the build")
	}
}
