package seal

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func testParent(t *testing.T) *Parent {
	seed := make([]byte, 32)
	rand.Read(seed)
	return &Parent{Public: tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, Restricted: true, Decrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES, KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
				Mode: tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}, CurveID: tpm2.TPMECCNistP256, KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull}}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}, SeedValue: seed}
}

// Create then Open returns the data and authValue; the blob survives its
// marshaling; another parent's seedValue, or any changed byte of the
// private area, is an integrity failure.
func TestCreateOpen(t *testing.T) {
	p := testParent(t)
	data := []byte("0123456789abcdef0123456789abcdef")
	auth := []byte{1, 2, 0, 3, 0, 0}
	pol := NewPolicy()
	if err := pol.AuthValue(); err != nil {
		t.Fatal(err)
	}
	obj, err := Create(rand.Reader, p, Options{Data: data, AuthValue: auth, Policy: pol.Digest(), Attributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true}})
	if err != nil {
		t.Fatal(err)
	}
	back, rest, err := ParseBlob(obj.Blob())
	if err != nil || len(rest) != 0 {
		t.Fatalf("ParseBlob: %v, %d bytes left", err, len(rest))
	}
	c, err := Open(p, back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Data, data) || !bytes.Equal(c.AuthValue, auth[:4]) {
		t.Errorf("opened %x / auth %x", c.Data, c.AuthValue)
	}
	other := testParent(t)
	if _, err := Open(other, obj); !errors.Is(err, ErrIntegrity) {
		t.Errorf("under another parent: %v", err)
	}
	for _, off := range []int{0, 5, len(obj.Private) / 2, len(obj.Private) - 1} {
		bad := *obj
		bad.Private = append([]byte(nil), obj.Private...)
		bad.Private[off] ^= 0x40
		if _, err := Open(p, &bad); err == nil {
			t.Errorf("byte %d of the private area changed: opened", off)
		}
	}
	bad := *obj
	bad.Public.ObjectAttributes.NoDA = true
	if _, err := Open(p, &bad); !errors.Is(err, ErrIntegrity) {
		t.Errorf("changed public area (its Name is in the HMAC): %v", err)
	}
}

func TestCreateRefuses(t *testing.T) {
	p := testParent(t)
	for _, o := range []Options{
		{Data: nil},
		{Data: make([]byte, 129)},
		{Data: []byte("x"), Policy: make([]byte, 20)},
		{Data: []byte("x"), AuthValue: make([]byte, 33)},
		{Data: []byte("x"), Attributes: tpm2.TPMAObject{SignEncrypt: true}},
	} {
		if _, err := Create(rand.Reader, p, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	np := *p
	np.Public.ObjectAttributes.Restricted = false
	if _, err := Create(rand.Reader, &np, Options{Data: []byte("x")}); err == nil {
		t.Error("a non-storage parent accepted")
	}
}
