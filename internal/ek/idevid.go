package ek

import (
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Device identity keys of the TCG "TPM 2.0 Keys for Device Identity and
// Attestation" (version 1.00 revision 12, 2021; "DevID spec" below): the
// IDevID, an IEEE 802.1AR signing key, and the IAK, a restricted signing
// (attestation) key. Both are primary keys of the endorsement hierarchy
// (DevID spec section 7.3.1), so a TPM recreates them from the endorsement
// primary seed and the template.

// DevIDKind says which device identity key a template is for.
type DevIDKind string

const (
	IAK    DevIDKind = "iak"
	IDevID DevIDKind = "idevid"
)

// DevIDAlgs are the key types device identity keys are offered in: the
// templates of DevID spec section 7.3.4 (Tables 3 and 4) whose hash and
// curve the TCG TPM builds implement. Each key type implies its nameAlg:
// SHA-256 for RSA-2048 and NIST P-256, SHA-384 for RSA-3072 and NIST P-384.
var DevIDAlgs = []Alg{RSA2048, RSA3072, ECCP256, ECCP384}

// DevIDNeeds are the TPM build switches a device identity key type needs.
func DevIDNeeds(alg Alg) []string {
	switch alg {
	case RSA2048:
		return []string{"ALG_SHA256", "RSA_2048"}
	case RSA3072:
		return []string{"ALG_SHA384", "RSA_3072"}
	case ECCP256:
		return []string{"ALG_SHA256", "ECC_NIST_P256"}
	case ECCP384:
		return []string{"ALG_SHA384", "ECC_NIST_P384"}
	}
	return nil
}

// ParseDevIDAlg accepts a device identity key type: rsa2048, rsa3072,
// ecc-p256 or ecc-p384.
func ParseDevIDAlg(s string) (Alg, error) {
	for _, a := range DevIDAlgs {
		if Alg(strings.ToLower(strings.TrimSpace(s))) == a {
			return a, nil
		}
	}
	names := make([]string, len(DevIDAlgs))
	for i, a := range DevIDAlgs {
		names[i] = string(a)
	}
	return "", fmt.Errorf("unknown device identity key type %q (known: %s)", s, strings.Join(names, ", "))
}

// Authorization policies of the templates (DevID spec section 7.3.4,
// Tables 3 and 4; the same digests are hard-coded in swtpm and
// rust-keylime, byte for byte). adminWithPolicy is SET, so they gate the
// key's admin role (TPM2_Certify of the key itself, TPM2_ObjectChangeAuth);
// signing uses the empty authValue (userWithAuth).
var (
	iakPolicySHA256    = mustDecode("5437182326e414fca797d5f174615a1641f61255797c3a2b22c21d120b2d1e07")
	iakPolicySHA384    = mustDecode("129d94ebf84556652c6eef43bbb757512ac87e52be7b349ca6ce4d826f749fcf672f51716c5cbb605f313bf345aab312")
	idevidPolicySHA256 = mustDecode("ad6b3a2284fd698a0710bf5cc1b9bdf15e2532e3f601fa4b93a6a8fa8de579ea")
	idevidPolicySHA384 = mustDecode("4db1aa836d0b5615df6ee53a40ef70c61c217f4303d44695925972bc927006cfa5cbdf6dc18c4dbe329b2f1542c3dd33")
)

// Object attributes (DevID spec section 7.3.4.1): fixedTPM, fixedParent,
// sensitiveDataOrigin, userWithAuth, adminWithPolicy, sign; the IAK is
// also restricted. IAK 0x000500F2, IDevID 0x000400F2.
var (
	iakAttrs = tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
		AdminWithPolicy: true, Restricted: true, SignEncrypt: true}
	idevidAttrs = tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
		AdminWithPolicy: true, SignEncrypt: true}
)

// DevIDUnique returns the unique field the template carries: the ASCII
// bytes "IAK" or "IDEVID" (DevID spec section 7.3.4; TPM2_CreatePrimary
// takes it into the creation DRBG through the template's Name, so it
// selects the key). For RSA it is unique.rsa. For ECC, the published
// implementations disagree: swtpm puts the string in x and leaves y empty,
// rust-keylime puts it in both x and y. The revision 12 text available to
// this project does not settle it, so this package follows rust-keylime,
// the consumer that regenerates these keys from templates: x = y = the
// string.
func DevIDUnique(kind DevIDKind) []byte {
	if kind == IAK {
		return []byte("IAK")
	}
	return []byte("IDEVID")
}

// DevIDTemplate returns the TPMT_PUBLIC of a device identity key (DevID
// spec section 7.3.4, Tables 3 and 4): symmetric NULL; the IAK signs with
// RSASSA-PSS or ECDSA and the nameAlg, the IDevID has scheme NULL (RSA,
// the signer picks the scheme) or ECDSA with the nameAlg (ECC).
func DevIDTemplate(kind DevIDKind, alg Alg) (tpm2.TPMTPublic, error) {
	if kind != IAK && kind != IDevID {
		return tpm2.TPMTPublic{}, fmt.Errorf("ek: unknown device identity key %q", kind)
	}
	var (
		nameAlg tpm2.TPMIAlgHash
		bits    tpm2.TPMKeyBits
		curve   tpm2.TPMECCCurve
	)
	switch alg {
	case RSA2048:
		nameAlg, bits = tpm2.TPMAlgSHA256, 2048
	case RSA3072:
		nameAlg, bits = tpm2.TPMAlgSHA384, 3072
	case ECCP256:
		nameAlg, curve = tpm2.TPMAlgSHA256, tpm2.TPMECCNistP256
	case ECCP384:
		nameAlg, curve = tpm2.TPMAlgSHA384, tpm2.TPMECCNistP384
	default:
		_, err := ParseDevIDAlg(string(alg))
		return tpm2.TPMTPublic{}, err
	}
	attrs, policy := iakAttrs, iakPolicySHA256
	switch {
	case kind == IAK && nameAlg == tpm2.TPMAlgSHA384:
		policy = iakPolicySHA384
	case kind == IDevID && nameAlg == tpm2.TPMAlgSHA256:
		attrs, policy = idevidAttrs, idevidPolicySHA256
	case kind == IDevID:
		attrs, policy = idevidAttrs, idevidPolicySHA384
	}
	unique := DevIDUnique(kind)
	t := tpm2.TPMTPublic{NameAlg: nameAlg, ObjectAttributes: attrs, AuthPolicy: tpm2.TPM2BDigest{Buffer: policy}}
	if bits != 0 {
		scheme := tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull}
		if kind == IAK {
			scheme = tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSAPSS,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSAPSS, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: nameAlg})}
		}
		t.Type = tpm2.TPMAlgRSA
		t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, Scheme: scheme, KeyBits: bits})
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: unique})
		return t, nil
	}
	t.Type = tpm2.TPMAlgECC
	t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: nameAlg})},
		CurveID: curve,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	})
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: unique}, Y: tpm2.TPM2BECCParameter{Buffer: unique}})
	return t, nil
}

// DeriveDevID derives the device identity key TPM2_CreatePrimary returns
// in the endorsement hierarchy for DevIDTemplate(kind, alg), from the
// endorsement primary seed.
func DeriveDevID(eps []byte, kind DevIDKind, alg Alg, mode CandidateMode) (*Key, error) {
	t, err := DevIDTemplate(kind, alg)
	if err != nil {
		return nil, err
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("ek: empty endorsement seed")
	}
	return DeriveTemplate(eps, t, mode, nil)
}
