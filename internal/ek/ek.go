// Package ek derives the keys a TCG reference TPM creates from a primary
// seed with TPM2_CreatePrimary: the endorsement keys of the TCG default EK
// templates L-1 (RSA-2048) and L-2 (ECC NIST P-256) with Derive, and the
// key of any RSA-2048/3072/4096 or ECC NIST P-256/P-384 template (the
// high-range EK templates, storage root keys, ...) with DeriveTemplate: the
// creation DRBG seeded from the seed and the template's Name, the RSA prime
// search with sieve and Miller-Rabin, and the ECC scalar derivation, with
// the per-build differences as a CandidateMode.
package ek

import (
	"crypto"
	"fmt"
	"math/big"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Alg is a key type.
type Alg string

const (
	RSA2048 Alg = "rsa2048"
	ECCP256 Alg = "ecc-p256"
	// The other key types DeriveTemplate produces (Key.Alg). Derive,
	// Template and ParseAlg know only the L-1/L-2 types of Algs.
	RSA3072  Alg = "rsa3072"
	RSA4096  Alg = "rsa4096"
	ECCP384  Alg = "ecc-p384"
	rsaExp65     = 65537
)

// Algs are the supported EK types, in the order they are provisioned.
var Algs = []Alg{RSA2048, ECCP256}

// ParseAlg accepts an EK type: a template name (L-1, H-3, ...), its
// canonical name (rsa2048, ecc-p384, ...) or an alias.
func ParseAlg(s string) (Alg, error) {
	t, err := LookupEK(s)
	if err != nil {
		return "", err
	}
	return t.Alg, nil
}

// Template returns the TCG default EK template for alg (L-1 or L-2), with
// the zero-filled unique field the templates specify.
func Template(alg Alg) tpm2.TPMTPublic {
	switch alg {
	case RSA2048:
		return tpm2.RSAEKTemplate
	default:
		t := tpm2.ECCEKTemplate
		p, _ := t.Parameters.ECCDetail()
		pp := *p
		pp.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}
		pp.KDF = tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull}
		t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &pp)
		return t
	}
}

// purpose is the DRBG personalization label of TPM2_CreatePrimary,
// including the terminating NUL.
var purpose = []byte("Primary Object Creation\x00")

// name returns nameAlg || H_nameAlg(marshaled TPMT_PUBLIC), or nil if the
// builds do not implement nameAlg (see objectName).
func name(pub *tpm2.TPMTPublic) []byte {
	n, _ := objectName(pub)
	return n
}

// Key is a derived primary key.
type Key struct {
	Alg    Alg
	Public tpm2.TPMTPublic
	// Name is nameAlg || H_nameAlg(TPMT_PUBLIC), as the TPM computes it.
	Name []byte
	// Primes are the RSA primes in generation order.
	Primes []*big.Int
	// ECCPrivate is the ECC private scalar d (curve size, big-endian).
	ECCPrivate []byte
	drbg       *DRBG
	// digestSize is the digest size of the nameAlg, the size of the
	// seedValue CryptCreateObject draws.
	digestSize int
}

// TPM2BPublic returns the marshaled TPM2B_PUBLIC, what tpm2_createek -u
// writes.
func (k *Key) TPM2BPublic() []byte {
	return tpm2.Marshal(tpm2.New2B(k.Public))
}

// CryptoPublic returns the key as an *rsa.PublicKey or *ecdsa.PublicKey.
func (k *Key) CryptoPublic() (crypto.PublicKey, error) {
	return tpm2.Pub(k.Public)
}

// Options tune Derive and DeriveTemplate for tests.
type Options struct {
	// Trace receives every output of the creation DRBG.
	Trace func(out []byte)
	// Instantiated is called with the DRBG right after instantiation.
	Instantiated func(r *DRBG)
}

// Derive computes the EK for the seed (EPSeed.buffer[0:size]) with the
// given candidate mode (only RSA depends on it), for the TCG default
// template of alg (L-1 or L-2, see Template).
func Derive(eps []byte, alg Alg, mode CandidateMode, opt *Options) (*Key, error) {
	t := EKOf(alg)
	if t == nil {
		return nil, fmt.Errorf("ek: unsupported algorithm %q", alg)
	}
	tmpl, ok := t.Template()
	if !ok {
		return nil, fmt.Errorf("ek: %s (%s) cannot be derived: this tool has no %s", t.ID, t.What, strings.Join(t.Needs, ", "))
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("ek: empty endorsement seed")
	}
	k, err := DeriveTemplate(eps, tmpl, mode, opt)
	if err != nil {
		return nil, err
	}
	k.Alg = alg
	return k, nil
}

// SeedValue continues the creation DRBG past key generation the way
// CryptCreateObject does for a primary key: for the endorsement hierarchy
// it stirs in shProof, then ehProof; then it draws the seedValue, as many
// bytes as the nameAlg digest. Pass nil for both proofs for a primary key
// of another hierarchy (no stirring). It returns the draw; the TPM keeps
// it only for restricted keys without the sign attribute (it zeroes it
// otherwise). It does not affect the public key; it is exposed to check the
// DRBG against the TPM's. Call it at most once.
func (k *Key) SeedValue(shProof, ehProof []byte) []byte {
	if shProof != nil || ehProof != nil {
		k.drbg.AdditionalData(shProof)
		k.drbg.AdditionalData(ehProof)
	}
	return k.drbg.Generate(k.digestSize)
}

// RSAPrivate returns the RSA private area as the TPM keeps it
// (PackExponent): five values of half the modulus size, big-endian, in
// the order of the TPM's storage slots: the second prime found, the first
// prime found (MakePgreaterThanQ swaps only the pointers), then dP and dQ
// for the larger and the smaller prime, and qInv = smaller^-1 mod larger.
func (k *Key) RSAPrivate() ([]byte, error) {
	if len(k.Primes) != 2 {
		return nil, fmt.Errorf("ek: not an RSA key")
	}
	second, first := k.Primes[1], k.Primes[0]
	p, q := second, first
	if p.Cmp(q) < 0 {
		p, q = q, p
	}
	n, err := k.Public.Unique.RSA()
	if err != nil {
		return nil, err
	}
	half := len(n.Buffer) / 2
	r, _ := k.Public.Parameters.RSADetail()
	e := big.NewInt(int64(r.Exponent))
	if r.Exponent == 0 {
		e = big.NewInt(rsaExp65)
	}
	one := big.NewInt(1)
	dp := new(big.Int).ModInverse(e, new(big.Int).Sub(p, one))
	dq := new(big.Int).ModInverse(e, new(big.Int).Sub(q, one))
	qinv := new(big.Int).ModInverse(q, p)
	if dp == nil || dq == nil || qinv == nil {
		return nil, fmt.Errorf("ek: RSA private exponents do not exist")
	}
	out := make([]byte, 0, 5*half)
	for _, v := range []*big.Int{second, first, dp, dq, qinv} {
		out = append(out, v.FillBytes(make([]byte, half))...)
	}
	return out, nil
}

// ParseAlgs reads a comma-separated list of EK types (template names or
// aliases, as ParseAlg takes them), each once, in the order given.
func ParseAlgs(s string) ([]Alg, error) {
	var out []Alg
	seen := map[Alg]bool{}
	for _, f := range strings.Split(s, ",") {
		a, err := ParseAlg(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if !seen[a] {
			out = append(out, a)
			seen[a] = true
		}
	}
	return out, nil
}
