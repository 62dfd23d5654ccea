package luks

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// A token survives JSON; the serialized handle survives parsing and
// refuses truncation and trailing bytes.
func TestTokenAndHandleRoundTrip(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	p := &Policy{PubKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), PubKeyPCRs: []int{11}, PIN: true}
	d, err := p.Digest()
	if err != nil {
		t.Fatal(err)
	}
	pub := tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
		Unique:     tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: make([]byte, 32)})}
	name := append([]byte{0, 0x0b}, make([]byte, 32)...)
	srk := SerializeHandle(0x81000001, name, pub)
	h, n2, p2, err := ParseHandle(srk)
	if err != nil || h != 0x81000001 || !bytes.Equal(n2, name) || !bytes.Equal(tpm2.Marshal(*p2), tpm2.Marshal(pub)) {
		t.Fatalf("ParseHandle: %v %x %x", err, h, n2)
	}
	for _, b := range [][]byte{srk[:len(srk)-1], append(append([]byte(nil), srk...), 0)} {
		if _, _, _, err := ParseHandle(b); err == nil {
			t.Errorf("%d bytes accepted", len(b))
		}
	}
	tok := &Token{Type: TokenType, Keyslots: []string{"4"}, Blob: "AAAA", PCRs: []int{}, PCRBank: "sha256", PolicyHash: "00", PIN: true, PubKeyPCRs: []int{11}, SRK: "gQ=="}
	back, err := ParseToken(tok.JSON())
	if err != nil || back.Keyslot() != 4 || back.SRK != tok.SRK || !back.PIN || back.PubKeyPCRs[0] != 11 {
		t.Fatalf("ParseToken: %v %+v", err, back)
	}
	if _, err := ParseToken([]byte(`{"type":"systemd-tpm2","keyslots":["1"],"tpm2-blob":"AA=="}`)); err == nil {
		t.Error("a token without tpm2-pcrs and tpm2-policy-hash accepted")
	}
	// Exponent 0 gives another Name, so another policy digest.
	p.ZeroExponent = true
	if d0, _ := p.Digest(); bytes.Equal(d0, d) {
		t.Error("the exponent does not enter the signing key's Name")
	}
}

// The PIN auth: unsalted SHA-256 (252) differs from the salted form, and
// the salt changes it.
func TestPINAuth(t *testing.T) {
	a, _ := PINAuth([]byte("1234"), nil)
	b, _ := PINAuth([]byte("1234"), make([]byte, 32))
	c, _ := PINAuth([]byte("1234"), bytes.Repeat([]byte{1}, 32))
	if bytes.Equal(a, b) || bytes.Equal(b, c) || len(a) == 0 || len(a) > 32 {
		t.Errorf("%x %x %x", a, b, c)
	}
}
