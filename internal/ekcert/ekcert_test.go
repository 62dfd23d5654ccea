package ekcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var info = TPMInfo{Manufacturer: 0x58595A20, Model: "xCG fTPM", FirmwareV1: 0x20240125, SpecFamily: "2.0", SpecRevision: 183}

func newCA(t *testing.T, rsaKey bool) *CA {
	c, k, err := NewSelfSigned("test CA", rsaKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: c, Signer: k}
}

func TestIssueProfile(t *testing.T) {
	ca := newCA(t, false)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		pub any
		ku  x509.KeyUsage
	}{{&rk.PublicKey, x509.KeyUsageKeyEncipherment}, {&ek.PublicKey, x509.KeyUsageKeyAgreement}} {
		c, err := Issue(ca, Request{PublicKey: tc.pub, TPM: info})
		if err != nil {
			t.Fatal(err)
		}
		if c.KeyUsage != tc.ku {
			t.Errorf("key usage %v", c.KeyUsage)
		}
		if !c.NotAfter.Equal(EndOfTime) {
			t.Errorf("notAfter %v", c.NotAfter)
		}
		// SAN values are UTF8String, the SAN is critical
		for _, e := range c.Extensions {
			if e.Id.Equal([]int{2, 5, 29, 17}) {
				if !e.Critical {
					t.Error("SAN not critical with an empty subject")
				}
				if strings.Count(string(e.Value), "\x0c\x0bid:") != 2 {
					t.Errorf("SAN values not UTF8String: %x", e.Value)
				}
			}
			if e.Id.Equal([]int{2, 5, 29, 19}) && !e.Critical {
				t.Error("basicConstraints not critical")
			}
		}
		res, err := Check(c.Raw, CheckOptions{Roots: []*x509.Certificate{ca.Cert}, Want: tc.pub, TPM: &info})
		if err != nil || !res.OK() {
			t.Fatalf("check: %v %+v", err, res)
		}
		if res.Version != "id:20240125" || res.Spec != "2.0 level 0 revision 183" {
			t.Errorf("result %+v", res)
		}
		// the same certificate for another TPM build is flagged
		other := info
		other.FirmwareV1 = 0x20250320
		other.SpecRevision = 184
		res, _ = Check(c.Raw, CheckOptions{TPM: &other})
		if len(res.Problems) != 2 {
			t.Errorf("build mismatch problems: %v", res.Problems)
		}
	}
}

func TestIssueSerialAndValidity(t *testing.T) {
	ca := newCA(t, true)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	big21 := new(big.Int).Lsh(big.NewInt(1), 160)
	if _, err := Issue(ca, Request{PublicKey: &k.PublicKey, TPM: info, Serial: big21}); err == nil {
		t.Error("21-octet serial accepted")
	}
	if _, err := Issue(ca, Request{PublicKey: &k.PublicKey, TPM: info, Serial: big.NewInt(-1)}); err == nil {
		t.Error("negative serial accepted")
	}
	now := time.Now()
	if _, err := Issue(ca, Request{PublicKey: &k.PublicKey, TPM: info, NotBefore: now, NotAfter: now.Add(-time.Hour)}); err == nil {
		t.Error("inverted validity accepted")
	}
	c, err := Issue(ca, Request{PublicKey: &k.PublicKey, TPM: info})
	if err != nil {
		t.Fatal(err)
	}
	if c.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Errorf("RSA CA signature %v, want PKCS#1 v1.5", c.SignatureAlgorithm)
	}
	if len(c.SerialNumber.Bytes()) > 20 {
		t.Error("serial too long")
	}
}

func TestCheckFlagsWrongKeyAndNonEK(t *testing.T) {
	ca := newCA(t, false)
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, _ := Issue(ca, Request{PublicKey: &k1.PublicKey, TPM: info})
	res, _ := Check(c.Raw, CheckOptions{Want: &k2.PublicKey})
	if !res.KeyMismatch {
		t.Error("wrong key not flagged")
	}
	// the CA certificate itself is no EK certificate
	res, _ = Check(ca.Cert.Raw, CheckOptions{})
	if len(res.Problems) == 0 {
		t.Error("CA certificate passed as EK certificate")
	}
	if _, err := Check([]byte("junk"), CheckOptions{}); err == nil {
		t.Error("junk parsed")
	}
}

func TestRedactURI(t *testing.T) {
	for in, want := range map[string]string{
		"pkcs11:token=x;pin-value=1234;object=y":   "pkcs11:token=x;pin-value=REDACTED;object=y",
		"pkcs11:token=x;object=y?pin-value=1234":   "pkcs11:token=x;object=y?pin-value=REDACTED",
		"pkcs11:object=y?module=m&PIN-VALUE=abc&z": "pkcs11:object=y?module=m&PIN-VALUE=REDACTED&z",
	} {
		if got := redactURI(in); got != want {
			t.Errorf("%s: %s", in, got)
		}
	}
}

func TestLoadCARefusals(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, false)
	other := newCA(t, false)
	w := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	kp, _ := EncodeKey(ca.Signer)
	okp, _ := EncodeKey(other.Signer)
	cert := w("ca.pem", EncodeCert(ca.Cert))
	key := w("ca.key", kp)
	okey := w("other.key", okp)
	if _, err := LoadCA(context.Background(), cert, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cert, key string
		now       time.Time
		want      string
	}{
		{cert, okey, time.Now(), "does not match"},
		{cert, key, time.Now().Add(48 * time.Hour), "expired"},
		{cert, key, time.Now().Add(-48 * time.Hour), "not valid before"},
		{cert, filepath.Join(dir, "nope"), time.Now(), "no such CA key file"},
		{cert, cert, time.Now(), "not a usable private key"},
		{key, key, time.Now(), "no certificate found"},
		{cert, "pkcs11:token=x;object=y;pin-value=secret", time.Now(), "pin-value=REDACTED"},
		{cert, "pkcs11:token=x;object=y?pin-value=secret&x=1", time.Now(), "no pkcs11 support"},
	} {
		_, err := LoadCA(context.Background(), tc.cert, tc.key, tc.now)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s/%s: %v, want %q", tc.cert, tc.key, err, tc.want)
		}
	}
}
