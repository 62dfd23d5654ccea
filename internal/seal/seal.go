// Package seal computes, without a TPM, the sealed data objects a TCG
// reference TPM returns from TPM2_Create under a known storage parent, and
// opens such objects again: the public area (KEYEDHASH, unique =
// H_nameAlg(seedValue || data)), and the private area protected the way the
// TPM protects any child object (TPM 2.0 Library Part 1, "Protected Storage";
// the reference code's SensitiveToPrivate, ProduceOuterWrap and
// ComputeOuterIntegrity):
//
//	symKey  = KDFa(parent nameAlg, parent seedValue, "STORAGE", child Name, "", parent symmetric key bits)
//	hmacKey = KDFa(parent nameAlg, parent seedValue, "INTEGRITY", "", "", parent digest bits)
//	TPM2B_PRIVATE = TPM2B(HMAC(hmacKey, TPM2B(IV) || encSensitive || child Name))
//	                || TPM2B(IV) || encSensitive
//	encSensitive  = AES-CFB(symKey, IV, TPM2B_SENSITIVE)
//
// where the sensitive area's authValue is padded with zeros to the child's
// nameAlg digest size (MarshalSensitive). It also computes the policy
// digests of the policy commands a sealed object is commonly bound to.
package seal

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// Parent is a storage parent as the TPM holds it: its public area (a
// restricted decryption key with an AES-CFB symmetric definition) and the
// seedValue of its sensitive area, from which the TPM derives the keys that
// protect its children.
type Parent struct {
	Public    tpm2.TPMTPublic
	SeedValue []byte
}

// Object is a sealed data object: its public area and the buffer of its
// TPM2B_PRIVATE, as TPM2_Create returns them.
type Object struct {
	Public  tpm2.TPMTPublic
	Private []byte
}

// Contents is what a sealed object keeps secret.
type Contents struct {
	Data      []byte
	AuthValue []byte // trailing zeros removed, as the TPM keeps it
	SeedValue []byte
}

// Options describe a new sealed object.
type Options struct {
	Data       []byte // the secret, at most 128 bytes (MAX_SYM_DATA)
	AuthValue  []byte // userAuth; empty for none
	Policy     []byte // authPolicy digest of the object's nameAlg
	Attributes tpm2.TPMAObject
	NameAlg    tpm2.TPMIAlgHash // 0: SHA-256
}

// ErrIntegrity is returned by Open when the private area's integrity HMAC
// does not verify: the object was sealed under another parent (another key
// of the hierarchy, or another TPM), or was changed. A TPM answers
// TPM_RC_INTEGRITY (0x1DF for the inPrivate parameter of TPM2_Load).
var ErrIntegrity = errors.New("integrity check failed: sealed under another parent key (another TPM, or another storage key of the same TPM), or changed")

// maxSymData is MAX_SYM_DATA of the TCG TPM builds.
const maxSymData = 128

// Create computes the object TPM2_Create returns for a KEYEDHASH data object
// (scheme NULL) holding o.Data under parent. The seedValue (obfuscation
// value, one nameAlg digest) and the IV are drawn from rnd.
func Create(rnd io.Reader, parent *Parent, o Options) (*Object, error) {
	nameAlg := o.NameAlg
	if nameAlg == 0 {
		nameAlg = tpm2.TPMAlgSHA256
	}
	h, err := nameAlg.Hash()
	if err != nil {
		return nil, fmt.Errorf("seal: nameAlg: %w", err)
	}
	if len(o.Data) == 0 || len(o.Data) > maxSymData {
		return nil, fmt.Errorf("seal: sealed data must be 1 to %d bytes, not %d", maxSymData, len(o.Data))
	}
	if n := len(o.Policy); n != 0 && n != h.Size() {
		return nil, fmt.Errorf("seal: authPolicy of %d bytes, want %d for the nameAlg", n, h.Size())
	}
	if len(o.AuthValue) > h.Size() {
		return nil, fmt.Errorf("seal: authValue of %d bytes is longer than the nameAlg digest (%d)", len(o.AuthValue), h.Size())
	}
	if o.Attributes.SensitiveDataOrigin || o.Attributes.SignEncrypt || o.Attributes.Decrypt || o.Attributes.Restricted {
		return nil, fmt.Errorf("seal: a sealed data object has none of sensitiveDataOrigin, sign, decrypt, restricted")
	}
	seed := make([]byte, h.Size())
	if _, err := io.ReadFull(rnd, seed); err != nil {
		return nil, fmt.Errorf("seal: random: %w", err)
	}
	uh := h.New()
	uh.Write(seed)
	uh.Write(o.Data)
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgKeyedHash, NameAlg: nameAlg, ObjectAttributes: o.Attributes,
		AuthPolicy: tpm2.TPM2BDigest{Buffer: append([]byte(nil), o.Policy...)},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: uh.Sum(nil)}),
	}
	auth := make([]byte, h.Size())
	copy(auth, trimZeros(o.AuthValue))
	sens := tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		AuthValue:     tpm2.TPM2BAuth{Buffer: auth},
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: o.Data}),
	}
	plain := tpm2.Marshal(tpm2.New2B(sens))
	defer clear(plain)
	defer clear(auth)
	name, err := objectName(&pub)
	if err != nil {
		return nil, err
	}
	p, err := protection(parent)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return nil, fmt.Errorf("seal: random: %w", err)
	}
	enc, err := p.crypt(name, iv, plain, true)
	if err != nil {
		return nil, err
	}
	ivb := tpm2.Marshal(tpm2.TPM2BIV{Buffer: iv})
	mac := p.integrity(append(append([]byte(nil), ivb...), enc...), name)
	priv := tpm2.Marshal(tpm2.TPM2BDigest{Buffer: mac})
	priv = append(append(priv, ivb...), enc...)
	return &Object{Public: pub, Private: priv}, nil
}

// Open checks obj the way TPM2_Load does under parent (the outer integrity
// HMAC, then the sensitive area against the public area) and returns its
// contents. ErrIntegrity means another parent.
func Open(parent *Parent, obj *Object) (*Contents, error) {
	if obj.Public.Type != tpm2.TPMAlgKeyedHash {
		return nil, fmt.Errorf("seal: object type %#04x is not a sealed data object (KEYEDHASH)", uint16(obj.Public.Type))
	}
	h, err := obj.Public.NameAlg.Hash()
	if err != nil {
		return nil, fmt.Errorf("seal: object nameAlg: %w", err)
	}
	p, err := protection(parent)
	if err != nil {
		return nil, err
	}
	name, err := objectName(&obj.Public)
	if err != nil {
		return nil, err
	}
	r := bytes.NewReader(obj.Private)
	mac, err := read2B(r)
	if err != nil || len(mac) != p.hash.Size() {
		return nil, fmt.Errorf("seal: private area: integrity value of %d bytes, want %d for the parent's nameAlg", len(mac), p.hash.Size())
	}
	rest := obj.Private[2+len(mac):]
	if !hmac.Equal(p.integrity(rest, name), mac) {
		return nil, ErrIntegrity
	}
	iv, err := read2B(r)
	if err != nil || len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("seal: private area: IV of %d bytes, want %d", len(iv), aes.BlockSize)
	}
	enc := rest[2+len(iv):]
	plain, err := p.crypt(name, iv, enc, false)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	s2b, err := tpm2.Unmarshal[tpm2.TPM2BSensitive](plain)
	if err != nil {
		return nil, fmt.Errorf("seal: sensitive area: %w", err)
	}
	if int(binary.BigEndian.Uint16(plain))+2 != len(plain) {
		return nil, fmt.Errorf("seal: sensitive area size does not match the private area")
	}
	sens, err := s2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("seal: sensitive area: %w", err)
	}
	if sens.SensitiveType != tpm2.TPMAlgKeyedHash {
		return nil, fmt.Errorf("seal: sensitive area type %#04x does not match the public area (KEYEDHASH)", uint16(sens.SensitiveType))
	}
	bits, err := sens.Sensitive.Bits()
	if err != nil {
		return nil, fmt.Errorf("seal: sensitive area: %w", err)
	}
	unique, err := obj.Public.Unique.KeyedHash()
	if err != nil {
		return nil, fmt.Errorf("seal: public area: %w", err)
	}
	uh := h.New()
	uh.Write(sens.SeedValue.Buffer)
	uh.Write(bits.Buffer)
	if !hmac.Equal(uh.Sum(nil), unique.Buffer) {
		return nil, fmt.Errorf("seal: the sensitive area does not belong to the public area (unique != H(seedValue || data)); TPM2_Load would refuse it (TPM_RC_BINDING)")
	}
	return &Contents{Data: append([]byte(nil), bits.Buffer...), AuthValue: append([]byte(nil), trimZeros(sens.AuthValue.Buffer)...),
		SeedValue: append([]byte(nil), sens.SeedValue.Buffer...)}, nil
}

// Blob is TPM2B_PRIVATE || TPM2B_PUBLIC, the form tpm2-tss marshals (and
// systemd stores).
func (o *Object) Blob() []byte {
	return append(tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: o.Private}), tpm2.Marshal(tpm2.New2B(o.Public))...)
}

// ParseBlob splits TPM2B_PRIVATE || TPM2B_PUBLIC; rest is what follows
// (systemd appends a TPM2B_ENCRYPTED_SECRET to imported objects).
func ParseBlob(b []byte) (obj *Object, rest []byte, err error) {
	r := bytes.NewReader(b)
	priv, err := read2B(r)
	if err != nil {
		return nil, nil, fmt.Errorf("TPM2B_PRIVATE: %w", err)
	}
	pb, err := read2B(r)
	if err != nil {
		return nil, nil, fmt.Errorf("TPM2B_PUBLIC: %w", err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](pb)
	if err != nil {
		return nil, nil, fmt.Errorf("TPM2B_PUBLIC: %w", err)
	}
	if !bytes.Equal(tpm2.Marshal(pub), pb) {
		return nil, nil, fmt.Errorf("TPM2B_PUBLIC: trailing bytes inside the public area")
	}
	return &Object{Public: *pub, Private: priv}, b[len(b)-r.Len():], nil
}

func objectName(pub *tpm2.TPMTPublic) ([]byte, error) {
	h, err := pub.NameAlg.Hash()
	if err != nil {
		return nil, fmt.Errorf("seal: nameAlg: %w", err)
	}
	d := h.New()
	d.Write(tpm2.Marshal(pub))
	return d.Sum(binary.BigEndian.AppendUint16(nil, uint16(pub.NameAlg))), nil
}

func read2B(r *bytes.Reader) ([]byte, error) {
	var n uint16
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return nil, fmt.Errorf("truncated")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("truncated: size %d, %d bytes left", n, r.Len())
	}
	return b, nil
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// protector holds what a parent protects its children with.
type protector struct {
	hash    crypto.Hash
	seed    []byte
	keyBits int
}

func protection(parent *Parent) (*protector, error) {
	pub := &parent.Public
	a := pub.ObjectAttributes
	if !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return nil, fmt.Errorf("seal: the parent is not a storage key (restricted decrypt)")
	}
	h, err := pub.NameAlg.Hash()
	if err != nil {
		return nil, fmt.Errorf("seal: parent nameAlg: %w", err)
	}
	var sym tpm2.TPMTSymDefObject
	switch pub.Type {
	case tpm2.TPMAlgECC:
		p, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, err
		}
		sym = p.Symmetric
	case tpm2.TPMAlgRSA:
		p, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, err
		}
		sym = p.Symmetric
	default:
		return nil, fmt.Errorf("seal: parent type %#04x is not supported (RSA or ECC)", uint16(pub.Type))
	}
	if sym.Algorithm != tpm2.TPMAlgAES {
		return nil, fmt.Errorf("seal: the parent's symmetric algorithm %#04x is not supported (AES)", uint16(sym.Algorithm))
	}
	mode, err := sym.Mode.AES()
	if err != nil || *mode != tpm2.TPMAlgCFB {
		return nil, fmt.Errorf("seal: the parent's symmetric mode is not CFB")
	}
	bits, err := sym.KeyBits.AES()
	if err != nil {
		return nil, err
	}
	if len(parent.SeedValue) == 0 {
		return nil, fmt.Errorf("seal: the parent has no seedValue")
	}
	return &protector{hash: h, seed: parent.SeedValue, keyBits: int(*bits)}, nil
}

func (p *protector) crypt(name, iv, in []byte, encrypt bool) ([]byte, error) {
	key := tpm2.KDFa(p.hash, p.seed, "STORAGE", name, nil, p.keyBits)
	defer clear(key)
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(in))
	if encrypt {
		cipher.NewCFBEncrypter(b, iv).XORKeyStream(out, in)
	} else {
		cipher.NewCFBDecrypter(b, iv).XORKeyStream(out, in)
	}
	return out, nil
}

func (p *protector) integrity(data, name []byte) []byte {
	key := tpm2.KDFa(p.hash, p.seed, "INTEGRITY", nil, nil, p.hash.Size()*8)
	defer clear(key)
	m := hmac.New(p.hash.New, key)
	m.Write(data)
	m.Write(name)
	return m.Sum(nil)
}
