// Package ek derives the endorsement keys a TCG reference TPM creates from
// its endorsement primary seed with TPM2_CreatePrimary and the TCG default
// EK templates L-1 (RSA-2048) and L-2 (ECC NIST P-256): the creation DRBG
// seeded from the EPS and the template's Name, the RSA prime search with
// sieve and Miller-Rabin, and the ECC scalar derivation, with the per-build
// differences as a CandidateMode.
package ek

import (
	"crypto"
	"crypto/ecdh"
	"crypto/sha256"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// Alg is an EK key type.
type Alg string

const (
	RSA2048  Alg = "rsa2048"
	ECCP256  Alg = "ecc-p256"
	rsaExp65     = 65537
)

// Algs are the supported EK types, in the order they are provisioned.
var Algs = []Alg{RSA2048, ECCP256}

// ParseAlg accepts an algorithm name.
func ParseAlg(s string) (Alg, error) {
	switch Alg(s) {
	case RSA2048, ECCP256:
		return Alg(s), nil
	case "rsa":
		return RSA2048, nil
	case "ecc":
		return ECCP256, nil
	}
	return "", fmt.Errorf("unknown EK algorithm %q (use rsa2048 or ecc-p256)", s)
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

// name returns nameAlg || SHA-256(marshaled TPMT_PUBLIC).
func name(pub *tpm2.TPMTPublic) []byte {
	h := sha256.Sum256(tpm2.Marshal(pub))
	return append([]byte{0x00, 0x0B}, h[:]...)
}

// Key is a derived EK.
type Key struct {
	Alg    Alg
	Public tpm2.TPMTPublic
	// Name is nameAlg || SHA-256(TPMT_PUBLIC), as the TPM computes it.
	Name []byte
	// Primes are the RSA primes in generation order (for tests).
	Primes []*big.Int
	drbg   *DRBG
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

// Options tune Derive for tests.
type Options struct {
	// Trace receives every output of the creation DRBG.
	Trace func(out []byte)
	// Instantiated is called with the DRBG right after instantiation.
	Instantiated func(r *DRBG)
}

// Derive computes the EK for the seed (EPSeed.buffer[0:size]) with the
// given candidate mode (only RSA depends on it).
func Derive(eps []byte, alg Alg, mode CandidateMode, opt *Options) (*Key, error) {
	if len(eps) == 0 {
		return nil, fmt.Errorf("ek: empty endorsement seed")
	}
	tmpl := Template(alg)
	r := NewDRBG(eps, purpose, name(&tmpl), nil)
	if opt != nil {
		if opt.Instantiated != nil {
			opt.Instantiated(r)
		}
		r.Trace = opt.Trace
	}
	k := &Key{Alg: alg, Public: tmpl, drbg: r}
	switch alg {
	case RSA2048:
		n, primes, err := rsaModulus(r, rsaExp65, mode)
		if err != nil {
			return nil, err
		}
		k.Primes = primes
		k.Public.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
	case ECCP256:
		x, y, err := eccPoint(r.Generate(40))
		if err != nil {
			return nil, err
		}
		k.Public.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
	default:
		return nil, fmt.Errorf("ek: unsupported algorithm %q", alg)
	}
	k.Name = name(&k.Public)
	return k, nil
}

// SeedValue continues the creation DRBG past key generation the way
// CryptCreateObject does for a primary key of the endorsement hierarchy
// (stir shProof, then ehProof, draw 32 bytes). It does not affect the
// public key; it is exposed to check the DRBG against the TPM's.
func (k *Key) SeedValue(shProof, ehProof []byte) []byte {
	k.drbg.AdditionalData(shProof)
	k.drbg.AdditionalData(ehProof)
	return k.drbg.Generate(32)
}

var p256Order, _ = new(big.Int).SetString("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16)

// eccPoint turns the 40-byte draw into the P-256 public point:
// d = c mod (n-1) + 1, Q = d*G.
func eccPoint(draw []byte) (x, y []byte, err error) {
	db := privateScalar(draw)
	defer clear(db)
	priv, err := ecdh.P256().NewPrivateKey(db)
	if err != nil {
		return nil, nil, err
	}
	pt := priv.PublicKey().Bytes() // 04 || X || Y
	return pt[1:33], pt[33:65], nil
}

// privateScalar is the ECC private scalar for a 40-byte draw,
// d = c mod (n-1) + 1, as 32 big-endian bytes.
func privateScalar(draw []byte) []byte {
	c := new(big.Int).SetBytes(draw)
	return c.Mod(c, new(big.Int).Sub(p256Order, one)).Add(c, one).FillBytes(make([]byte, 32))
}
