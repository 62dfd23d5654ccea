// Package luks writes and reads systemd's "systemd-tpm2" LUKS2 tokens (the
// format of systemd-cryptenroll --tpm2-device, read by systemd-cryptsetup
// and libcryptsetup's systemd-tpm2 token plugin) and drives the cryptsetup
// binary to add the keyslot and import the token. It never writes LUKS2
// metadata itself.
//
// The format facts are those of systemd's src/shared/tpm2-util.c and
// src/cryptenroll/cryptenroll-tpm2.c, confirmed for 252 (Debian 12's
// 252.39), 254 and 257:
//
//   - the secret is 32 random bytes; the keyslot's passphrase is its
//     base64 with padding (44 characters), the keyslot uses PBKDF2-SHA512 with
//     1000 iterations (the secret is already high-entropy);
//   - the token holds "tpm2-blob" (base64 of TPM2B_PRIVATE || TPM2B_PUBLIC),
//     "tpm2-pcrs" (always present, maybe empty), "tpm2-pcr-bank",
//     "tpm2-primary-alg", "tpm2-policy-hash" (hex), "tpm2-pin", and for a signed
//     PCR policy "tpm2_pubkey" (base64 of the PEM) and "tpm2_pubkey_pcrs";
//     from 253 on "tpm2_salt" with a PIN, from 254 on "tpm2_srk";
//   - 252 seals under a transient ECC primary key (the SRK template without
//     noDA, attributes 0x00030072); 254 and later under the SRK at
//     0x81000001, recorded in "tpm2_srk" as Esys_TR_Serialize writes it;
//   - the sealed object's attributes are fixedTPM|fixedParent (0x12); 257
//     adds noDA (0x412) when there is no PIN.
package luks

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"sort"
	"strconv"

	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/seal"
)

// Generation is the systemd version whose token format and sealing parent a
// token follows.
type Generation int

// The generations this package writes.
const (
	Systemd252 Generation = 252
	Systemd254 Generation = 254
	Systemd257 Generation = 257
)

// Generations lists the supported --guest-systemd values.
var Generations = []Generation{Systemd252, Systemd254, Systemd257}

// ParseGeneration accepts 252, 254 or 257.
func ParseGeneration(s string) (Generation, error) {
	n, err := strconv.Atoi(s)
	if err == nil {
		for _, g := range Generations {
			if Generation(n) == g {
				return g, nil
			}
		}
	}
	return 0, fmt.Errorf("%q is not a supported systemd version: give 252 (legacy primary key), 254 (storage root key at 0x81000001) or 257 (254's format, noDA sealed object without a PIN)", s)
}

// UsesSRK tells whether this generation seals under the persistent SRK.
func (g Generation) UsesSRK() bool { return g >= Systemd254 }

// SecretSize is the size of the sealed secret systemd makes.
const SecretSize = 32

// Passphrase is the keyslot passphrase for a secret: its base64 with padding.
func Passphrase(secret []byte) []byte {
	out := make([]byte, base64.StdEncoding.EncodedLen(len(secret)))
	base64.StdEncoding.Encode(out, secret)
	return out
}

// Attributes are the sealed object's attributes systemd g creates.
func (g Generation) Attributes(pin bool) tpm2.TPMAObject {
	return tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: g >= Systemd257 && !pin}
}

// Policy is what a sealed secret is bound to.
type Policy struct {
	// Bank is the PCR bank of PCRs and PubKeyPCRs (SHA-256 by default).
	Bank tpm2.TPMIAlgHash
	// PCRs are literal PCR values (--tpm2-pcrs=7:HEX...).
	PCRs map[int][]byte
	// PubKeyPEM is the PEM of an RSA key that signs PCR policies; PubKeyPCRs
	// are the PCRs those signatures cover.
	PubKeyPEM  []byte
	PubKeyPCRs []int
	// PIN adds PolicyAuthValue.
	PIN bool
	// ZeroExponent computes the signing key's Name with the exponent 0
	// (what systemd 255.0-255.2 wrote), to recognise such tokens.
	ZeroExponent bool
}

// PublicKey parses PubKeyPEM: an RSA public key (PUBLIC KEY or RSA PUBLIC
// KEY), as systemd-measure and ukify sign PCR policies with.
func (p *Policy) PublicKey() (*rsa.PublicKey, error) {
	b, _ := pem.Decode(p.PubKeyPEM)
	if b == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(b.Bytes)
	case "RSA PUBLIC KEY":
		k, err = x509.ParsePKCS1PublicKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key", b.Type)
	}
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the key is a %T; systemd verifies PCR signatures with RSA keys only", k)
	}
	return rk, nil
}

func (p *Policy) bank() tpm2.TPMIAlgHash {
	if p.Bank == 0 {
		return tpm2.TPMAlgSHA256
	}
	return p.Bank
}

// PCRList returns the literal PCRs in ascending order.
func (p *Policy) PCRList() []int {
	var l []int
	for i := range p.PCRs {
		l = append(l, i)
	}
	sort.Ints(l)
	return l
}

// Digest computes the policy digest systemd computes for p: PolicyAuthorize
// (signing key's Name, empty policyRef) for a signed policy, then PolicyPCR
// over the literal values, then PolicyAuthValue for a PIN. With nothing, it
// is 32 zero bytes.
func (p *Policy) Digest() ([]byte, error) {
	pol := seal.NewPolicy()
	if len(p.PubKeyPEM) > 0 {
		name, err := p.PubKeyName(!p.ZeroExponent)
		if err != nil {
			return nil, err
		}
		if err := pol.Authorize(name); err != nil {
			return nil, err
		}
	}
	if len(p.PCRs) > 0 {
		if err := pol.PCR(p.bank(), p.PCRs); err != nil {
			return nil, err
		}
	}
	if p.PIN {
		if err := pol.AuthValue(); err != nil {
			return nil, err
		}
	}
	return pol.Digest(), nil
}

// PubKeyName is the Name TPM2_LoadExternal gives the signing key as systemd
// loads it: with the exponent written explicitly (explicitExponent), as 252,
// 254 and 257 do, or as 0 (what systemd 255 before 255.3 wrote, and still
// tries when unsealing).
func (p *Policy) PubKeyName(explicitExponent bool) ([]byte, error) {
	k, err := p.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("PCR signing key: %w", err)
	}
	pub, err := seal.RSAVerifyKey(k)
	if err != nil {
		return nil, err
	}
	if !explicitExponent && k.E == 65537 {
		r, _ := pub.Parameters.RSADetail()
		rr := *r
		rr.Exponent = 0
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &rr)
	}
	return seal.Name(pub)
}

// pbkdf2Iterations is systemd's tpm2_util_pbkdf2_hmac_sha256 iteration count.
const pbkdf2Iterations = 10000

// SaltSize is the size of the PIN salt systemd 253 and later draw.
const SaltSize = 32

// PINAuth is the sealed object's authValue for a PIN: SHA-256 of the PIN
// (252), or, with a salt (253 and later), SHA-256 of the base64 of
// PBKDF2-HMAC-SHA256(PIN, salt, 10000 iterations, 32 bytes). Trailing zero
// bytes are removed, as the TPM does.
func PINAuth(pin []byte, salt []byte) ([]byte, error) {
	in := pin
	if len(salt) > 0 {
		k, err := pbkdf2.Key(sha256.New, string(pin), salt, pbkdf2Iterations, 32)
		if err != nil {
			return nil, err
		}
		in = Passphrase(k)
		clear(k)
		defer clear(in)
	}
	h := sha256.Sum256(in)
	return bytes.TrimRight(h[:], "\x00"), nil
}

// Token is a systemd-tpm2 LUKS2 token. Field order is systemd's.
type Token struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Blob       string   `json:"tpm2-blob"`
	PCRs       []int    `json:"tpm2-pcrs"`
	PCRBank    string   `json:"tpm2-pcr-bank,omitempty"`
	PrimaryAlg string   `json:"tpm2-primary-alg,omitempty"`
	PolicyHash string   `json:"tpm2-policy-hash"`
	PIN        bool     `json:"tpm2-pin"`
	PubKeyPCRs []int    `json:"tpm2_pubkey_pcrs,omitempty"`
	PubKey     string   `json:"tpm2_pubkey,omitempty"`
	Salt       string   `json:"tpm2_salt,omitempty"`
	SRK        string   `json:"tpm2_srk,omitempty"`
}

// TokenType is the LUKS2 token type systemd uses.
const TokenType = "systemd-tpm2"

// bankName is systemd's name of a PCR bank.
func bankName(h tpm2.TPMIAlgHash) string {
	switch h {
	case tpm2.TPMAlgSHA1:
		return "sha1"
	case tpm2.TPMAlgSHA256:
		return "sha256"
	case tpm2.TPMAlgSHA384:
		return "sha384"
	case tpm2.TPMAlgSHA512:
		return "sha512"
	}
	return ""
}

// BankByName maps systemd's PCR bank names to algorithms.
func BankByName(s string) (tpm2.TPMIAlgHash, error) {
	for _, h := range []tpm2.TPMIAlgHash{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512} {
		if bankName(h) == s {
			return h, nil
		}
	}
	return 0, fmt.Errorf("unknown PCR bank %q (sha1, sha256, sha384, sha512)", s)
}

// NewToken assembles the token systemd g writes for an object sealed with
// policy p, its policy digest, the PIN salt (nil without a PIN or for 252)
// and the serialized SRK (254 and later).
func NewToken(g Generation, keyslot int, obj *seal.Object, p *Policy, digest, salt, srk []byte) *Token {
	t := &Token{Type: TokenType, Keyslots: []string{strconv.Itoa(keyslot)}, Blob: base64.StdEncoding.EncodeToString(obj.Blob()),
		PCRs: p.PCRList(), PolicyHash: hex.EncodeToString(digest), PIN: p.PIN}
	if t.PCRs == nil {
		t.PCRs = []int{}
	}
	if len(p.PCRs) > 0 || len(p.PubKeyPCRs) > 0 {
		t.PCRBank = bankName(p.bank())
	}
	if g < Systemd257 {
		t.PrimaryAlg = "ecc"
	}
	if len(p.PubKeyPEM) > 0 {
		t.PubKey = base64.StdEncoding.EncodeToString(p.PubKeyPEM)
		t.PubKeyPCRs = append([]int(nil), p.PubKeyPCRs...)
		sort.Ints(t.PubKeyPCRs)
	}
	if len(salt) > 0 {
		t.Salt = base64.StdEncoding.EncodeToString(salt)
	}
	if len(srk) > 0 {
		t.SRK = base64.StdEncoding.EncodeToString(srk)
	}
	return t
}

// JSON is the token as cryptsetup token import takes it.
func (t *Token) JSON() []byte {
	b, _ := json.Marshal(t)
	return b
}

// Keyslot is the token's single keyslot, or -1.
func (t *Token) Keyslot() int {
	if len(t.Keyslots) != 1 {
		return -1
	}
	n, err := strconv.Atoi(t.Keyslots[0])
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// ParseToken reads a systemd-tpm2 token's JSON as systemd does: the
// required fields present, blob and policy hash as single values.
func ParseToken(raw []byte) (*Token, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	for _, f := range []string{"tpm2-blob", "tpm2-pcrs", "tpm2-policy-hash"} {
		if _, ok := m[f]; !ok {
			return nil, fmt.Errorf("the token lacks %q, which systemd requires", f)
		}
	}
	if b := bytes.TrimSpace(m["tpm2-blob"]); len(b) > 0 && b[0] == '[' {
		return nil, fmt.Errorf("sharded token (tpm2-blob is a list: signed PCR policy combined with pcrlock); not supported")
	}
	var t Token
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, err
	}
	if t.Type != TokenType {
		return nil, fmt.Errorf("token type %q is not %q", t.Type, TokenType)
	}
	return &t, nil
}

// esysKeyResource is IESYSC_KEY_RSRC, the resource type of a key in
// Esys_TR_Serialize's output.
const esysKeyResource = 1

// SerializeHandle is Esys_TR_Serialize of a loaded key, what systemd stores
// in "tpm2_srk" (and tpm2_readpublic -t writes): handle (UINT32), TPM2B_NAME,
// resource type (UINT32, 1 for a key), TPM2B_PUBLIC.
func SerializeHandle(handle uint32, name []byte, pub tpm2.TPMTPublic) []byte {
	b := binary.BigEndian.AppendUint32(nil, handle)
	b = append(b, tpm2.Marshal(tpm2.TPM2BName{Buffer: name})...)
	b = binary.BigEndian.AppendUint32(b, esysKeyResource)
	return append(b, tpm2.Marshal(tpm2.New2B(pub))...)
}

// ParseHandle reads what SerializeHandle writes.
func ParseHandle(b []byte) (handle uint32, name []byte, pub *tpm2.TPMTPublic, err error) {
	if len(b) < 4+2 {
		return 0, nil, nil, fmt.Errorf("serialized handle of %d bytes is too short", len(b))
	}
	handle = binary.BigEndian.Uint32(b)
	n := int(binary.BigEndian.Uint16(b[4:]))
	off := 6 + n
	if len(b) < off+4+2 {
		return 0, nil, nil, fmt.Errorf("serialized handle is truncated")
	}
	name = b[6:off]
	if rt := binary.BigEndian.Uint32(b[off:]); rt != esysKeyResource {
		return 0, nil, nil, fmt.Errorf("serialized handle: resource type %d is not a key (1)", rt)
	}
	off += 4
	pl := int(binary.BigEndian.Uint16(b[off:]))
	if len(b) != off+2+pl {
		return 0, nil, nil, fmt.Errorf("serialized handle: public area of %d bytes does not end the data (%d bytes left)", pl, len(b)-off-2)
	}
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](b[off+2:])
	if err != nil {
		return 0, nil, nil, fmt.Errorf("serialized handle: public area: %w", err)
	}
	return handle, name, pub, nil
}
