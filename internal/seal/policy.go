package seal

import (
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"sort"

	"github.com/google/go-tpm/tpm2"
)

// Policy accumulates a policy digest the way a policy session does
// (TPM 2.0 Library Part 3, PolicyUpdate), with SHA-256, the hash of the
// sealed objects built here.
type Policy struct{ c *tpm2.PolicyCalculator }

// NewPolicy starts a policy digest at 32 zero bytes, the digest of a fresh
// policy session and of an object with no policy commands.
func NewPolicy() *Policy {
	c, _ := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	return &Policy{c: c}
}

// Digest is the current policy digest.
func (p *Policy) Digest() []byte { return p.c.Hash().Digest }

// PCRSelection is the TPML_PCR_SELECTION of one bank with 3 select bytes
// (24 PCRs, as PC Client TPMs have and systemd selects).
func PCRSelection(bank tpm2.TPMIAlgHash, pcrs []int) (tpm2.TPMLPCRSelection, error) {
	sel := make([]byte, 3)
	for _, i := range pcrs {
		if i < 0 || i > 23 {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("PCR %d out of range 0-23", i)
		}
		sel[i/8] |= 1 << (i % 8)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: bank, PCRSelect: sel}}}, nil
}

// PCR extends the policy with TPM2_PolicyPCR over the given values of one
// bank: the selection, then the digest of the values concatenated in
// ascending PCR order (the order the TPM reads them in).
func (p *Policy) PCR(bank tpm2.TPMIAlgHash, values map[int][]byte) error {
	h, err := bank.Hash()
	if err != nil {
		return fmt.Errorf("PCR bank: %w", err)
	}
	idx := make([]int, 0, len(values))
	for i, v := range values {
		if len(v) != h.Size() {
			return fmt.Errorf("PCR %d: value of %d bytes, the bank's digests have %d", i, len(v), h.Size())
		}
		idx = append(idx, i)
	}
	sort.Ints(idx)
	sel, err := PCRSelection(bank, idx)
	if err != nil {
		return err
	}
	// The PCR digest uses the session's hash (SHA-256), whatever the bank.
	pd := sha256.New()
	for _, i := range idx {
		pd.Write(values[i])
	}
	return tpm2.PolicyPCR{Pcrs: sel, PcrDigest: tpm2.TPM2BDigest{Buffer: pd.Sum(nil)}}.Update(p.c)
}

// Authorize resets the policy and extends it with TPM2_PolicyAuthorize for
// the key of the given Name and an empty policyRef: H(H(0... || CC || keyName)).
func (p *Policy) Authorize(keyName []byte) error {
	p.c.Reset()
	return tpm2.PolicyAuthorize{KeySign: tpm2.TPM2BName{Buffer: keyName}}.Update(p.c)
}

// AuthValue extends the policy with TPM2_PolicyAuthValue.
func (p *Policy) AuthValue() error { return tpm2.PolicyAuthValue{}.Update(p.c) }

// RSAVerifyKey is the public area TPM2_LoadExternal is given for an RSA
// policy-signing key by systemd: nameAlg SHA-256, decrypt|sign|userWithAuth,
// symmetric and scheme NULL, the key size of the modulus and the exponent
// written explicitly (65537, not the 0 that stands for it).
func RSAVerifyKey(k *rsa.PublicKey) (tpm2.TPMTPublic, error) {
	if k.E <= 0 || int64(k.E) > 0xffffffff {
		return tpm2.TPMTPublic{}, fmt.Errorf("RSA exponent %d does not fit a TPM public area", k.E)
	}
	n := k.N.Bytes()
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{Decrypt: true, SignEncrypt: true, UserWithAuth: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   tpm2.TPMIRSAKeyBits(len(n) * 8),
			Exponent:  uint32(k.E),
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n}),
	}, nil
}

// Name returns nameAlg || H_nameAlg(TPMT_PUBLIC) of a public area.
func Name(pub tpm2.TPMTPublic) ([]byte, error) { return objectName(&pub) }
