package ek

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

// highFile is tpm/ek-vectors-high.json: keys the real TCG TPM builds
// returned for the high-range EK templates (from the EPS) and SRK
// templates (from the SPS).
type highFile struct {
	Templates map[string]struct {
		What     string `json:"what"`
		Template string `json:"template"`
	} `json:"templates"`
	Targets map[string][]struct {
		EPS  string `json:"eps"`
		SPS  string `json:"sps"`
		Keys map[string]struct {
			OutPublic string `json:"out_public"`
			MS        int    `json:"ms"`
		} `json:"keys"`
	} `json:"targets"`
}

// highTargets are the builds of the vectors with their candidate modes
// (the profiles' ModeByName names).
var highTargets = map[string]string{"svsm-poc": "tcg-1.83", "svsm-2026": "tcg-1.84"}

func loadHigh(tb testing.TB) *highFile {
	var v highFile
	if err := json.Unmarshal(sharedvec.Read(tb, "tpm/ek-vectors-high.json"), &v); err != nil {
		tb.Fatal(err)
	}
	if len(v.Templates) == 0 || len(v.Targets) == 0 {
		tb.Fatal("ek-vectors-high.json has no templates or targets")
	}
	return &v
}

// highTemplate parses a template of the vector file and checks that it
// marshals back to the same bytes (the Name is computed over them).
func highTemplate(tb testing.TB, v *highFile, id string) tpm2.TPMTPublic {
	tv, ok := v.Templates[id]
	if !ok {
		tb.Fatalf("no template %s", id)
	}
	raw, err := hex.DecodeString(tv.Template)
	if err != nil {
		tb.Fatal(err)
	}
	tm, err := tpm2.Unmarshal[tpm2.TPMTPublic](raw)
	if err != nil {
		tb.Fatalf("template %s: %v", id, err)
	}
	if got := tpm2.Marshal(tm); !bytes.Equal(got, raw) {
		tb.Fatalf("template %s does not marshal back:\n got %x\nwant %x", id, got, raw)
	}
	return *tm
}

// seedFor returns the seed a vector key comes from: the SPS for the
// storage root keys, the EPS for the EK templates.
func seedFor(tb testing.TB, id, eps, sps string) []byte {
	var s string
	switch {
	case strings.HasPrefix(id, "SRK"):
		s = sps
	case strings.HasPrefix(id, "H-"):
		s = eps
	default:
		tb.Fatalf("key %s: not an EK (H-*) or SRK template, seed unknown", id)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Every key of ek-vectors-high.json, derived from its seed with its
// target's mode, equals the TPM2B_PUBLIC the real TPM returned.
func TestHighRangeVectors(t *testing.T) {
	v := loadHigh(t)
	for _, target := range sortedKeys(v.Targets) {
		modeName, ok := highTargets[target]
		if !ok {
			t.Errorf("unknown target %s in the vectors", target)
			continue
		}
		mode, err := ModeByName(modeName)
		if err != nil {
			t.Fatal(err)
		}
		matched, total := 0, 0
		for i, entry := range v.Targets[target] {
			for _, id := range sortedKeys(entry.Keys) {
				total++
				want, err := hex.DecodeString(entry.Keys[id].OutPublic)
				if err != nil {
					t.Fatal(err)
				}
				tm := highTemplate(t, v, id)
				k, err := DeriveTemplate(seedFor(t, id, entry.EPS, entry.SPS), tm, mode, nil)
				if err != nil {
					t.Errorf("%s #%d %s: %v", target, i, id, err)
					continue
				}
				got := k.TPM2BPublic()
				if !bytes.Equal(got, want) {
					t.Errorf("%s #%d %s (%s): TPM2B_PUBLIC differs\n got %x\nwant %x", target, i, id, k.Alg, got, want)
					continue
				}
				// The Name is nameAlg || H_nameAlg(TPMT_PUBLIC returned).
				pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](want)
				if err != nil {
					t.Fatal(err)
				}
				inner, _ := pub.Contents()
				wantName, err := objectName(inner)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(k.Name, wantName) || len(k.Name) != 2+k.digestSize {
					t.Errorf("%s #%d %s: Name %x, want %x", target, i, id, k.Name, wantName)
				}
				matched++
			}
		}
		t.Logf("%s (%s): %d of %d keys match", target, modeName, matched, total)
		if total == 0 {
			t.Errorf("%s: no keys in the vectors", target)
		}
	}
}

// The sequential search (with a trace) and the parallel one agree on the
// larger keys too, including the DRBG state they leave.
func TestHighRangeParallelMatchesSequential(t *testing.T) {
	v := loadHigh(t)
	old := parallelism
	defer func() { parallelism = old }()
	parallelism = 3
	ids := []string{"H-6", "H-7"}
	if testing.Short() {
		ids = ids[:1]
	}
	entry := v.Targets["svsm-2026"][0]
	for _, id := range ids {
		tm := highTemplate(t, v, id)
		seed := seedFor(t, id, entry.EPS, entry.SPS)
		for _, mode := range []CandidateMode{Reversed1_83, Reversed1_84} {
			var n int
			seq, err := DeriveTemplate(seed, tm, mode, &Options{Trace: func([]byte) { n++ }})
			if err != nil {
				t.Fatal(err)
			}
			par, err := DeriveTemplate(seed, tm, mode, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(seq.TPM2BPublic(), par.TPM2BPublic()) || !bytes.Equal(seq.SeedValue(nil, nil), par.SeedValue(nil, nil)) {
				t.Fatalf("%s mode %d: parallel and sequential differ", id, mode)
			}
			if len(seq.SeedValue(nil, nil)) != 48 {
				t.Errorf("%s: seedValue is not the SHA-384 digest size", id)
			}
		}
	}
}

// Derive is DeriveTemplate with the L-1/L-2 templates.
func TestDeriveIsDeriveTemplate(t *testing.T) {
	eps := benchSeed(7)
	for _, alg := range Algs {
		a, err := Derive(eps, alg, Reversed1_84, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := DeriveTemplate(eps, Template(alg), Reversed1_84, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a.Alg != alg || b.Alg != alg || !bytes.Equal(a.TPM2BPublic(), b.TPM2BPublic()) || !bytes.Equal(a.Name, b.Name) {
			t.Errorf("%s: Derive and DeriveTemplate differ", alg)
		}
	}
	if _, err := Derive(eps, "rsa1024", Reversed1_84, nil); err == nil {
		t.Error("Derive accepted an unknown algorithm")
	}
}

// Inputs outside what the builds or this package support give errors.
func TestDeriveTemplateRejects(t *testing.T) {
	eps := benchSeed(1)
	rsa := func(f func(p *tpm2.TPMSRSAParms), g func(t *tpm2.TPMTPublic)) tpm2.TPMTPublic {
		tm := tpm2.RSASRKTemplate
		p, _ := tm.Parameters.RSADetail()
		pp := *p
		if f != nil {
			f(&pp)
		}
		tm.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &pp)
		tm.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
		if g != nil {
			g(&tm)
		}
		return tm
	}
	ecc := func(curve tpm2.TPMECCCurve, g func(t *tpm2.TPMTPublic)) tpm2.TPMTPublic {
		tm := tpm2.ECCSRKTemplate
		p, _ := tm.Parameters.ECCDetail()
		pp := *p
		pp.CurveID = curve
		tm.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &pp)
		tm.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
		if g != nil {
			g(&tm)
		}
		return tm
	}
	cases := []struct {
		name string
		tmpl tpm2.TPMTPublic
		want string
	}{
		{"sha512", ecc(tpm2.TPMECCNistP521, func(t *tpm2.TPMTPublic) { t.NameAlg = tpm2.TPMAlgSHA512 }), "nameAlg"},
		{"p521", ecc(tpm2.TPMECCNistP521, nil), "curve"},
		{"bn256", ecc(tpm2.TPMECCBNP256, nil), "curve"},
		{"nullName", ecc(tpm2.TPMECCNistP256, func(t *tpm2.TPMTPublic) { t.NameAlg = tpm2.TPMAlgNull }), "TPM_ALG_NULL"},
		{"rsa1024", rsa(func(p *tpm2.TPMSRSAParms) { p.KeyBits = 1024 }, nil), "RSA-1024"},
		{"rsa1536", rsa(func(p *tpm2.TPMSRSAParms) { p.KeyBits = 1536 }, nil), "key size"},
		{"exp3", rsa(func(p *tpm2.TPMSRSAParms) { p.Exponent = 3 }, nil), "exponent"},
		{"expComposite", rsa(func(p *tpm2.TPMSRSAParms) { p.Exponent = 65539 * 3 }, nil), "exponent"},
		{"keyedHash", tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256}, "key type"},
		{"noOrigin", rsa(nil, func(t *tpm2.TPMTPublic) { t.ObjectAttributes.SensitiveDataOrigin = false }), "sensitiveDataOrigin"},
		{"fixedTPM", rsa(nil, func(t *tpm2.TPMTPublic) { t.ObjectAttributes.FixedParent = false }), "fixedParent"},
		{"signDecryptRestricted", rsa(nil, func(t *tpm2.TPMTPublic) { t.ObjectAttributes.SignEncrypt = true }), "restricted"},
		{"policySize", rsa(nil, func(t *tpm2.TPMTPublic) { t.AuthPolicy.Buffer = make([]byte, 20) }), "authPolicy"},
		{"noSym", rsa(func(p *tpm2.TPMSRSAParms) {
			p.Symmetric = tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}
		}, nil), "symmetric"},
		{"restrictedScheme", rsa(func(p *tpm2.TPMSRSAParms) {
			p.Scheme = tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgOAEP, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgOAEP, &tpm2.TPMSEncSchemeOAEP{HashAlg: tpm2.TPMAlgSHA256})}
		}, nil), "scheme"},
	}
	for _, c := range cases {
		k, err := DeriveTemplate(eps, c.tmpl, Reversed1_84, nil)
		if err == nil {
			t.Errorf("%s: accepted (%s)", c.name, k.Alg)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
	if _, err := DeriveTemplate(nil, tpm2.RSASRKTemplate, Reversed1_84, nil); err == nil {
		t.Error("empty seed accepted")
	}
}

// A signing key (restricted RSASSA, like an attestation key) derives; its
// trial encryption draws come after the key, so only the seedValue moves.
func TestDeriveTemplateSigningKey(t *testing.T) {
	tm := tpm2.RSASRKTemplate
	tm.ObjectAttributes.Decrypt = false
	tm.ObjectAttributes.SignEncrypt = true
	p, _ := tm.Parameters.RSADetail()
	pp := *p
	pp.Symmetric = tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}
	pp.Scheme = tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})}
	tm.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &pp)
	var draws []int
	k, err := DeriveTemplate(benchSeed(3), tm, Reversed1_84, &Options{Trace: func(b []byte) { draws = append(draws, len(b)) }})
	if err != nil {
		t.Fatal(err)
	}
	if last := draws[len(draws)-1]; last != 256 {
		t.Errorf("last key generation draw is %d bytes, want the 256-byte trial encryption draw", last)
	}
	if _, err := k.CryptoPublic(); err != nil {
		t.Fatal(err)
	}
	nb, _ := k.Public.Unique.RSA()
	if len(nb.Buffer) != 256 || nb.Buffer[0]&0x80 == 0 {
		t.Error("bad modulus")
	}
}

// BenchmarkHighRange derives the key of every template of
// ek-vectors-high.json for each profile, rotating over 100 seeds, and
// reports the median time of one derivation (run with -benchtime=Nx to
// time N seeds).
func BenchmarkHighRange(b *testing.B) {
	v := loadHigh(b)
	for _, target := range sortedKeys(highTargets) {
		mode, err := ModeByName(highTargets[target])
		if err != nil {
			b.Fatal(err)
		}
		for _, id := range sortedKeys(v.Templates) {
			tm := highTemplate(b, v, id)
			b.Run(target+"/"+id, func(b *testing.B) {
				var d []float64
				for i := 0; b.Loop(); i++ {
					t0 := time.Now()
					if _, err := DeriveTemplate(benchSeed(i%100), tm, mode, nil); err != nil {
						b.Fatal(err)
					}
					d = append(d, float64(time.Since(t0).Microseconds())/1000)
				}
				sort.Float64s(d)
				b.ReportMetric(d[len(d)/2], "ms-median")
				b.ReportMetric(d[len(d)-1], "ms-max")
			})
		}
	}
}

// The sieve prime tables have the sizes of CryptPrimeSieve.c with
// PrimeData.c's table (s_PrimesInTable = 6542 odd primes up to 65537);
// 3, 5 and 7 are in the initial field pattern instead.
func TestSievePrimeTables(t *testing.T) {
	for _, c := range []struct {
		bits, n int
		last    uint32
	}{{512, 1024, 8167}, {1024, 4096, 38891}, {1536, 6542, 65537}, {2048, 6542, 65537}} {
		ps := sievePrimesFor(c.bits)
		if len(ps)+3 != c.n || ps[0] != 11 || ps[len(ps)-1] != c.last {
			t.Errorf("%d-bit candidates: %d primes 11..%d, want %d odd primes up to %d", c.bits, len(ps), ps[len(ps)-1], c.n, c.last)
		}
	}
}

// The high-range templates built here are, byte for byte, the templates
// sent to the real TPM for the vectors.
func TestHighRangeTemplatesMatchVectors(t *testing.T) {
	v := loadHigh(t)
	for _, id := range []string{"H-1", "H-2", "H-3", "H-6", "H-7"} {
		et, err := LookupEK(id)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := et.Template()
		if !ok {
			t.Fatalf("%s: no template", id)
		}
		want := highTemplate(t, v, id)
		if !bytes.Equal(tpm2.Marshal(got), tpm2.Marshal(want)) {
			t.Errorf("%s: template\n got %x\nwant %x", id, tpm2.Marshal(got), tpm2.Marshal(want))
		}
	}
	for _, s := range []string{"L-1", "rsa2048", "rsa", "l-2", "ecc-p256", "H-3", "ecc-p384", "H-6", "rsa3072", "H-7", "rsa4096", "H-4", "h-5"} {
		if _, err := ParseAlg(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if _, err := Derive(make([]byte, 64), H4ECCP521, Reversed1_84, nil); err == nil {
		t.Error("H-4 derived")
	}
}
