package ek

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// The EK types of the TCG EK Credential Profile: the low-range templates
// L-1 and L-2 and the high-range H-1..H-7, each with the NV index of its
// certificate. Alg is the name used in file names and output.
const (
	H1RSA2048 Alg = "h1-rsa2048"
	H2ECCP256 Alg = "h2-ecc-p256"
	H4ECCP521 Alg = "h4-ecc-p521"
	H5ECCSM2  Alg = "h5-ecc-sm2"
)

// EKType describes one EK template of the EK Credential Profile.
type EKType struct {
	ID      string   // template name: L-1, H-3, ...
	Alg     Alg      // canonical name
	Aliases []string // other accepted names
	What    string
	Index   uint32 // certificate NV index
	// Needs are the TPM build switches the template needs (nameAlg,
	// curve, key size), as the profile tables name them.
	Needs []string
	tmpl  func() tpm2.TPMTPublic // nil: not derived by this package
}

// PolicyB digests of the EK Credential Profile (high-range templates).
var (
	policyBSHA256 = mustDecode("ca3d0a99a2b93906f7a3342414efcfb3a385d44cd1fd459089d19b5071c0b7a0")
	policyBSHA384 = mustDecode("b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12")
)

func mustDecode(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// highAttrs are the high-range object attributes (0x000300F2): the
// low-range set plus userWithAuth.
var highAttrs = tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
	AdminWithPolicy: true, Restricted: true, Decrypt: true}

func highRSA(nameAlg tpm2.TPMIAlgHash, policy []byte, aesBits tpm2.TPMKeyBits, bits tpm2.TPMKeyBits) func() tpm2.TPMTPublic {
	return func() tpm2.TPMTPublic {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: nameAlg, ObjectAttributes: highAttrs,
			AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES,
					KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, aesBits),
					Mode:    tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)},
				Scheme:  tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
				KeyBits: bits,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}
	}
}

func highECC(nameAlg tpm2.TPMIAlgHash, policy []byte, aesBits tpm2.TPMKeyBits, curve tpm2.TPMECCCurve) func() tpm2.TPMTPublic {
	return func() tpm2.TPMTPublic {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: nameAlg, ObjectAttributes: highAttrs,
			AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES,
					KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, aesBits),
					Mode:    tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)},
				Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				CurveID: curve,
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}
	}
}

// EKTypes lists the EK templates in provisioning order.
var EKTypes = []EKType{
	{ID: "L-1", Alg: RSA2048, Aliases: []string{"rsa"}, What: "RSA-2048 (low range)", Index: 0x01C00002, Needs: []string{"ALG_SHA256", "RSA_2048"}, tmpl: func() tpm2.TPMTPublic { return Template(RSA2048) }},
	{ID: "L-2", Alg: ECCP256, Aliases: []string{"ecc"}, What: "ECC NIST P-256 (low range)", Index: 0x01C0000A, Needs: []string{"ALG_SHA256", "ECC_NIST_P256"}, tmpl: func() tpm2.TPMTPublic { return Template(ECCP256) }},
	{ID: "H-1", Alg: H1RSA2048, What: "RSA-2048 (high range)", Index: 0x01C00012, Needs: []string{"ALG_SHA256", "RSA_2048"}, tmpl: highRSA(tpm2.TPMAlgSHA256, policyBSHA256, 128, 2048)},
	{ID: "H-2", Alg: H2ECCP256, What: "ECC NIST P-256 (high range)", Index: 0x01C00014, Needs: []string{"ALG_SHA256", "ECC_NIST_P256"}, tmpl: highECC(tpm2.TPMAlgSHA256, policyBSHA256, 128, tpm2.TPMECCNistP256)},
	{ID: "H-3", Alg: ECCP384, What: "ECC NIST P-384", Index: 0x01C00016, Needs: []string{"ALG_SHA384", "ECC_NIST_P384"}, tmpl: highECC(tpm2.TPMAlgSHA384, policyBSHA384, 256, tpm2.TPMECCNistP384)},
	{ID: "H-4", Alg: H4ECCP521, What: "ECC NIST P-521 with SHA-512", Index: 0x01C00018, Needs: []string{"ALG_SHA512", "ECC_NIST_P521"}},
	{ID: "H-5", Alg: H5ECCSM2, What: "ECC SM2 P-256 with SM3", Index: 0x01C0001A, Needs: []string{"ALG_SM3_256", "ECC_SM2_P256"}},
	{ID: "H-6", Alg: RSA3072, What: "RSA-3072", Index: 0x01C0001C, Needs: []string{"ALG_SHA384", "RSA_3072"}, tmpl: highRSA(tpm2.TPMAlgSHA384, policyBSHA384, 256, 3072)},
	{ID: "H-7", Alg: RSA4096, What: "RSA-4096", Index: 0x01C0001E, Needs: []string{"ALG_SHA384", "RSA_4096"}, tmpl: highRSA(tpm2.TPMAlgSHA384, policyBSHA384, 256, 4096)},
}

// LookupEK finds an EK type by template name, canonical name or alias.
func LookupEK(s string) (*EKType, error) {
	for i := range EKTypes {
		t := &EKTypes[i]
		if strings.EqualFold(s, t.ID) || Alg(strings.ToLower(s)) == t.Alg {
			return t, nil
		}
		for _, a := range t.Aliases {
			if strings.EqualFold(s, a) {
				return t, nil
			}
		}
	}
	var names []string
	for _, t := range EKTypes {
		names = append(names, t.ID+" ("+string(t.Alg)+")")
	}
	return nil, fmt.Errorf("unknown EK type %q (known: %s)", s, strings.Join(names, ", "))
}

// EKOf returns the EK type of a canonical name.
func EKOf(alg Alg) *EKType {
	t, err := LookupEK(string(alg))
	if err != nil {
		return nil
	}
	return t
}

// Template returns the template of the EK type (nil: not derivable).
func (t *EKType) Template() (tpm2.TPMTPublic, bool) {
	if t.tmpl == nil {
		return tpm2.TPMTPublic{}, false
	}
	return t.tmpl(), true
}
