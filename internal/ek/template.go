package ek

import (
	"crypto"
	"crypto/ecdh"
	_ "crypto/sha1" // nameAlg SHA-1
	_ "crypto/sha256"
	_ "crypto/sha512" // SHA-384
	"encoding/binary"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// DeriveTemplate derives the primary key TPM2_CreatePrimary returns for tmpl
// (unique field empty) from seed.
//
// seed is the primary seed of the hierarchy, Seed.buffer[0:size] (EPS for
// TPM_RH_ENDORSEMENT, SPS for TPM_RH_OWNER, PPS for TPM_RH_PLATFORM); the
// hierarchy itself does not enter the public key. inSensitive is taken to be
// empty (no sensitive data). The creation DRBG is seeded with the template's
// Name, nameAlg || H_nameAlg(TPMT_PUBLIC as given), so the unique field of
// tmpl is part of the derivation exactly as the TPM sees it. The returned
// Key.Public is tmpl with unique replaced by the public key, as the TPM
// returns it; Key.Name is its Name with the template's nameAlg.
//
// Supported are RSA keys of 2048, 3072 and 4096 bits (any exponent the TPM
// accepts) and ECC keys on NIST P-256 and P-384, with nameAlg SHA-1, SHA-256
// or SHA-384 (the hashes the TCG TPM builds implement). Key types, sizes,
// curves or hashes outside that set give an error, and so do templates the
// TPM would reject for the attribute and scheme checks listed at
// checkTemplate.
func DeriveTemplate(seed []byte, tmpl tpm2.TPMTPublic, mode CandidateMode, opt *Options) (*Key, error) {
	if len(seed) == 0 {
		return nil, fmt.Errorf("ek: empty primary seed")
	}
	spec, err := checkTemplate(&tmpl)
	if err != nil {
		return nil, err
	}
	tname, err := objectName(&tmpl)
	if err != nil {
		return nil, err
	}
	r := NewDRBG(seed, purpose, tname, nil)
	if opt != nil {
		if opt.Instantiated != nil {
			opt.Instantiated(r)
		}
		r.Trace = opt.Trace
	}
	k := &Key{Alg: spec.alg, Public: tmpl, drbg: r, digestSize: spec.hash.Size()}
	switch {
	case spec.rsaBits != 0:
		n, primes, err := rsaModulus(r, spec.rsaBits, spec.exponent, mode)
		if err != nil {
			return nil, err
		}
		k.Primes = primes
		k.Public.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
		if spec.sign {
			trialEncryptionDraws(r, new(big.Int).SetBytes(n))
		}
	default:
		draw := r.Generate(spec.curve.drawBytes())
		x, y, err := eccPoint(spec.curve, draw)
		if err != nil {
			return nil, err
		}
		k.ECCPrivate = eccScalar(spec.curve, draw)
		k.Public.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
	}
	if k.Name, err = objectName(&k.Public); err != nil {
		return nil, err
	}
	return k, nil
}

// trialEncryptionDraws consumes what the trial encryption of
// CryptRsaGenerateKey draws from the creation DRBG for a key with the sign
// attribute: TpmMath_GetRandomInRange(n), draws of bits(n)/8 bytes until
// one is in [1, n). The key itself is final at that point (the trial of a
// correct key succeeds), but the draws move the DRBG the seedValue comes
// from.
func trialEncryptionDraws(r *DRBG, n *big.Int) {
	nb := (n.BitLen() + 7) / 8
	v := new(big.Int)
	for {
		v.SetBytes(r.Generate(nb))
		if v.Sign() != 0 && v.Cmp(n) < 0 {
			return
		}
	}
}

// objectName is ObjectComputeName: nameAlg || H_nameAlg(marshaled
// TPMT_PUBLIC).
func objectName(pub *tpm2.TPMTPublic) ([]byte, error) {
	h, err := nameHash(pub.NameAlg)
	if err != nil {
		return nil, err
	}
	d := h.New()
	d.Write(tpm2.Marshal(pub))
	return d.Sum(binary.BigEndian.AppendUint16(nil, uint16(pub.NameAlg))), nil
}

// nameHash maps a nameAlg to its hash, for the hashes the builds implement
// (SVSM TpmProfile_Common.h: ALG_SHA1, ALG_SHA256 and ALG_SHA384 YES;
// SHA-512, SHA-256/192, SHA3 and SM3 NO).
func nameHash(alg tpm2.TPMIAlgHash) (crypto.Hash, error) {
	switch alg {
	case tpm2.TPMAlgSHA1:
		return crypto.SHA1, nil
	case tpm2.TPMAlgSHA256:
		return crypto.SHA256, nil
	case tpm2.TPMAlgSHA384:
		return crypto.SHA384, nil
	case tpm2.TPMAlgNull:
		return 0, fmt.Errorf("ek: nameAlg TPM_ALG_NULL: a primary key needs a Name (TPM_RC_HASH)")
	}
	return 0, fmt.Errorf("ek: nameAlg %#04x is not implemented by the TCG TPM builds (only SHA-1, SHA-256, SHA-384; TPM_RC_HASH)", uint16(alg))
}

// eccCurve is an ECC curve DeriveTemplate supports.
type eccCurve struct {
	alg   Alg
	order *big.Int
	size  int // coordinate and scalar size in bytes, BITS_TO_BYTES(key size)
	ecdh  ecdh.Curve
}

// drawBytes is the size of the scalar draw of TpmEcc_GenPrivateScalar:
// BITS_TO_BYTES(order bits) + 8 bytes (FIPS 186-4 B.4.1 extra random bits).
func (c *eccCurve) drawBytes() int { return (c.order.BitLen()+7)/8 + 8 }

func mustHex(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		panic("ek: bad constant " + s)
	}
	return n
}

var (
	curveP256 = &eccCurve{alg: ECCP256, size: 32, ecdh: ecdh.P256(),
		order: mustHex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")}
	curveP384 = &eccCurve{alg: ECCP384, size: 48, ecdh: ecdh.P384(),
		order: mustHex("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973")}
)

// eccScalar is TpmEcc_GenPrivateScalar for a draw: d = c mod (n-1) + 1,
// as c.size big-endian bytes.
func eccScalar(c *eccCurve, draw []byte) []byte {
	v := new(big.Int).SetBytes(draw)
	return v.Mod(v, new(big.Int).Sub(c.order, one)).Add(v, one).FillBytes(make([]byte, c.size))
}

// privateScalar is the P-256 private scalar for a 40-byte draw.
func privateScalar(draw []byte) []byte { return eccScalar(curveP256, draw) }

// eccPoint turns the scalar draw into the public point Q = d*G, each
// coordinate as exactly c.size big-endian bytes (TpmEcc_PointTo2B).
func eccPoint(c *eccCurve, draw []byte) (x, y []byte, err error) {
	db := eccScalar(c, draw)
	defer clear(db)
	priv, err := c.ecdh.NewPrivateKey(db)
	if err != nil {
		return nil, nil, err
	}
	pt := priv.PublicKey().Bytes() // 04 || X || Y
	return pt[1 : 1+c.size], pt[1+c.size:], nil
}

// templateSpec is what checkTemplate extracts from a template.
type templateSpec struct {
	alg      Alg
	hash     crypto.Hash
	sign     bool
	rsaBits  int
	exponent uint32
	curve    *eccCurve
}

// TPMA_OBJECT bits.
const (
	attrFixedTPM             = 1 << 1
	attrFixedParent          = 1 << 4
	attrSensitiveDataOrigin  = 1 << 5
	attrFirmwareLimited      = 1 << 8
	attrSVNLimited           = 1 << 9
	attrEncryptedDuplication = 1 << 11
	attrRestricted           = 1 << 16
	attrDecrypt              = 1 << 17
	attrSign                 = 1 << 18
	// attrReserved is what TPMA_OBJECT_Unmarshal rejects (Marshal.c).
	attrReserved = 0xfff0f001
)

// checkTemplate rejects what this package does not derive and what
// TPM2_CreatePrimary would refuse with an empty inSensitive.data (the checks
// of the unmarshaling code, CreateChecks, PublicAttributesValidation and
// SchemeChecks in Object_spt.c that concern a primary RSA or ECC key). It is
// meant to give a clear error instead of a key no TPM returns, not to
// reproduce every response code.
func checkTemplate(t *tpm2.TPMTPublic) (*templateSpec, error) {
	raw := tpm2.Marshal(t)
	if len(raw) < 8 {
		return nil, fmt.Errorf("ek: malformed template")
	}
	attrs := binary.BigEndian.Uint32(raw[4:8])
	has := func(a uint32) bool { return attrs&a != 0 }
	s := &templateSpec{sign: has(attrSign)}
	if t.Type != tpm2.TPMAlgRSA && t.Type != tpm2.TPMAlgECC {
		return nil, fmt.Errorf("ek: key type %#04x is not supported (RSA or ECC)", uint16(t.Type))
	}
	var err error
	if s.hash, err = nameHash(t.NameAlg); err != nil {
		return nil, err
	}
	if attrs&attrReserved != 0 {
		return nil, fmt.Errorf("ek: objectAttributes %#08x has reserved bits set (TPM_RC_RESERVED_BITS)", attrs)
	}
	if n := len(t.AuthPolicy.Buffer); n != 0 && n != s.hash.Size() {
		return nil, fmt.Errorf("ek: authPolicy of %d bytes, want 0 or %d for the nameAlg (TPM_RC_SIZE)", n, s.hash.Size())
	}
	if !has(attrSensitiveDataOrigin) {
		return nil, fmt.Errorf("ek: sensitiveDataOrigin must be SET for a key the TPM generates (TPM_RC_ATTRIBUTES)")
	}
	if has(attrFixedParent) != has(attrFixedTPM) {
		return nil, fmt.Errorf("ek: fixedParent and fixedTPM must be equal for a primary key (TPM_RC_ATTRIBUTES)")
	}
	if has(attrSign) == has(attrDecrypt) {
		if has(attrRestricted) {
			return nil, fmt.Errorf("ek: a restricted key needs exactly one of sign and decrypt (TPM_RC_ATTRIBUTES)")
		}
		if !has(attrSign) {
			return nil, fmt.Errorf("ek: an asymmetric key needs sign or decrypt (TPM_RC_ATTRIBUTES)")
		}
	}
	if has(attrFixedTPM) && has(attrEncryptedDuplication) {
		return nil, fmt.Errorf("ek: fixedTPM and encryptedDuplication are exclusive (TPM_RC_ATTRIBUTES)")
	}
	if has(attrFirmwareLimited) || has(attrSVNLimited) {
		return nil, fmt.Errorf("ek: firmwareLimited/svnLimited keys come from the FW/SVN-limited hierarchies, whose seeds are not supported")
	}

	// The selectors are read from the marshaled structures: go-tpm
	// marshals a zero selector as TPM_ALG_NULL.
	var scheme, hashAlg, sym tpm2.TPMAlgID
	switch t.Type {
	case tpm2.TPMAlgRSA:
		p, err := t.Parameters.RSADetail()
		if err != nil {
			return nil, fmt.Errorf("ek: RSA template: %w", err)
		}
		switch p.KeyBits {
		case 2048:
			s.alg = RSA2048
		case 3072:
			s.alg = RSA3072
		case 4096:
			s.alg = RSA4096
		case 1024:
			return nil, fmt.Errorf("ek: RSA-1024 is not supported (the builds have it, this package derives 2048, 3072 and 4096 bits)")
		default:
			return nil, fmt.Errorf("ek: RSA key size %d is not supported (2048, 3072 or 4096; TPM_RC_VALUE)", p.KeyBits)
		}
		s.rsaBits = int(p.KeyBits)
		s.exponent = p.Exponent
		if s.exponent == 0 {
			s.exponent = rsaExp65
		} else if s.exponent < rsaExp65 || !big.NewInt(int64(s.exponent)).ProbablyPrime(20) {
			return nil, fmt.Errorf("ek: RSA exponent %d must be 0 or a prime >= 65537 (TPM_RC_RANGE)", s.exponent)
		}
		sym, scheme, hashAlg = leadingAlg(tpm2.Marshal(&p.Symmetric)), leadingAlg(tpm2.Marshal(&p.Scheme)), schemeHash(tpm2.Marshal(&p.Scheme))
	case tpm2.TPMAlgECC:
		p, err := t.Parameters.ECCDetail()
		if err != nil {
			return nil, fmt.Errorf("ek: ECC template: %w", err)
		}
		switch p.CurveID {
		case tpm2.TPMECCNistP256:
			s.curve = curveP256
		case tpm2.TPMECCNistP384:
			s.curve = curveP384
		default:
			return nil, fmt.Errorf("ek: ECC curve %#04x is not supported (NIST P-256 or P-384)", uint16(p.CurveID))
		}
		s.alg = s.curve.alg
		if leadingAlg(tpm2.Marshal(&p.KDF)) != tpm2.TPMAlgNull {
			return nil, fmt.Errorf("ek: ECC kdf must be TPM_ALG_NULL (TPM_RC_KDF)")
		}
		sym, scheme, hashAlg = leadingAlg(tpm2.Marshal(&p.Symmetric)), leadingAlg(tpm2.Marshal(&p.Scheme)), schemeHash(tpm2.Marshal(&p.Scheme))
	default:
		return nil, fmt.Errorf("ek: key type %#04x is not supported (RSA or ECC)", uint16(t.Type))
	}

	// SchemeChecks, asymmetric branch.
	sign, decrypt, restricted := has(attrSign), has(attrDecrypt), has(attrRestricted)
	switch {
	case sign == decrypt:
		if scheme != tpm2.TPMAlgNull {
			return nil, fmt.Errorf("ek: a key with both sign and decrypt needs scheme TPM_ALG_NULL (TPM_RC_SCHEME)")
		}
	case sign:
		if isSignScheme(t.Type, scheme) {
			if hashAlg == tpm2.TPMAlgNull {
				return nil, fmt.Errorf("ek: signing scheme without a hash algorithm (TPM_RC_SCHEME)")
			}
		} else if restricted || scheme != tpm2.TPMAlgNull {
			return nil, fmt.Errorf("ek: scheme %#04x is not a signing scheme for this key (TPM_RC_SCHEME)", uint16(scheme))
		}
	default: // decrypt
		if restricted && scheme != tpm2.TPMAlgNull {
			return nil, fmt.Errorf("ek: a restricted decryption key needs scheme TPM_ALG_NULL (TPM_RC_SCHEME)")
		}
		if !restricted && scheme != tpm2.TPMAlgNull && !isDecryptScheme(t.Type, scheme) {
			return nil, fmt.Errorf("ek: scheme %#04x is not a decryption scheme for this key (TPM_RC_SCHEME)", uint16(scheme))
		}
	}
	if restricted && decrypt {
		if sym == tpm2.TPMAlgNull {
			return nil, fmt.Errorf("ek: a restricted decryption key needs a symmetric algorithm (TPM_RC_SYMMETRIC)")
		}
	} else if sym != tpm2.TPMAlgNull {
		return nil, fmt.Errorf("ek: only a restricted decryption key has a symmetric algorithm (TPM_RC_SYMMETRIC)")
	}
	return s, nil
}

// leadingAlg returns the selector of a marshaled TPMT_ structure.
func leadingAlg(marshaled []byte) tpm2.TPMAlgID {
	if len(marshaled) < 2 {
		return tpm2.TPMAlgNull
	}
	return tpm2.TPMAlgID(binary.BigEndian.Uint16(marshaled))
}

// schemeHash returns the hashAlg of a marshaled TPMT_RSA_SCHEME or
// TPMT_ECC_SCHEME: every signing scheme's details start with it.
func schemeHash(marshaled []byte) tpm2.TPMIAlgHash {
	if len(marshaled) < 4 {
		return tpm2.TPMAlgNull
	}
	return tpm2.TPMIAlgHash(binary.BigEndian.Uint16(marshaled[2:4]))
}

// isSignScheme is CryptIsAsymSignScheme for the builds' algorithm set.
func isSignScheme(typ tpm2.TPMIAlgPublic, s tpm2.TPMAlgID) bool {
	switch typ {
	case tpm2.TPMAlgRSA:
		return s == tpm2.TPMAlgRSASSA || s == tpm2.TPMAlgRSAPSS
	case tpm2.TPMAlgECC:
		return s == tpm2.TPMAlgECDSA || s == tpm2.TPMAlgECDAA || s == tpm2.TPMAlgECSchnorr || s == tpm2.TPMAlgSM2
	}
	return false
}

// isDecryptScheme is CryptIsAsymDecryptScheme for the builds' algorithm
// set.
func isDecryptScheme(typ tpm2.TPMIAlgPublic, s tpm2.TPMAlgID) bool {
	switch typ {
	case tpm2.TPMAlgRSA:
		return s == tpm2.TPMAlgRSAES || s == tpm2.TPMAlgOAEP
	case tpm2.TPMAlgECC:
		return s == tpm2.TPMAlgECDH || s == tpm2.TPMAlgSM2 || s == tpm2.TPMAlgECMQV
	}
	return false
}

// ObjectName returns the Name of a public area: nameAlg ||
// H_nameAlg(TPMT_PUBLIC).
func ObjectName(pub tpm2.TPMTPublic) ([]byte, error) { return objectName(&pub) }

// NameHash returns the hash of a nameAlg the TPM builds implement.
func NameHash(alg tpm2.TPMIAlgHash) (crypto.Hash, error) { return nameHash(alg) }
