//go:build pkcs11 && cgo

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
)

func softhsmModule(t *testing.T) string {
	for _, p := range []string{"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("SoftHSM (Debian softhsm2) not installed: PKCS#11 CA test skipped")
	return ""
}

// A CA key held in a PKCS#11 token (SoftHSM) signs the EK certificates of
// a manufactured image, which then verifies; for EC P-384 and RSA-3072.
func TestPKCS11CA(t *testing.T) {
	module := softhsmModule(t)
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Skip("softhsm2-util not found: PKCS#11 CA test skipped")
	}
	dir := t.TempDir()
	t.Chdir(dir)
	os.Mkdir("tokens", 0o700)
	os.WriteFile("softhsm2.conf", []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", filepath.Join(dir, "softhsm2.conf"))
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "ekca", "--pin", "1234", "--so-pin", "5678").CombinedOutput(); err != nil {
		t.Fatalf("init token: %v\n%s", err, out)
	}
	os.WriteFile("pin", []byte("1234"), 0o600)
	base := "pkcs11:module-path=" + module + ";token=ekca"
	k, err := kms.New(context.Background(), apiv1.Options{Type: "pkcs11", URI: base + "?pin-source=" + filepath.Join(dir, "pin")})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	for _, c := range []struct {
		name string
		alg  apiv1.SignatureAlgorithm
		bits int
	}{{"ec-p384", apiv1.ECDSAWithSHA384, 0}, {"rsa-3072", apiv1.SHA256WithRSA, 3072}} {
		obj := "id=" + map[string]string{"ec-p384": "01", "rsa-3072": "02"}[c.name] + ";object=" + c.name
		resp, err := k.CreateKey(&apiv1.CreateKeyRequest{Name: "pkcs11:" + obj, SignatureAlgorithm: c.alg, Bits: c.bits})
		if err != nil {
			t.Fatalf("%s: create key: %v", c.name, err)
		}
		signer, err := k.CreateSigner(&resp.CreateSignerRequest)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "token EK CA " + c.name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
		if err != nil {
			t.Fatal(err)
		}
		caPem := c.name + ".pem"
		os.WriteFile(caPem, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
		keyURI := base + ";" + obj + "?pin-source=" + filepath.Join(dir, "pin")
		run1 := func(args ...string) (int, string) {
			var o, e bytes.Buffer
			code := run(append([]string{"vtpm-mfg"}, args...), strings.NewReader(""), &o, &e)
			return code, o.String() + e.String()
		}
		run1("key", "generate", "-o", c.name+".key")
		for _, profile := range []string{"svsm-poc", "svsm-2026"} {
			img := c.name + "-" + profile + ".img"
			if code, out := run1("manufacture", "--profile", profile, "--key-file", c.name+".key", "--ca-cert", caPem, "--ca-key", keyURI, "-o", img); code != 0 {
				t.Fatalf("%s %s: manufacture: %s", c.name, profile, out)
			}
			if code, out := run1("verify", "--state", img, "--key-file", c.name+".key", "--ca-cert", caPem); code != 0 || !strings.Contains(out, "OK:") {
				t.Fatalf("%s %s: verify: %s", c.name, profile, out)
			}
		}
	}
}
