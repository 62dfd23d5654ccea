package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"

	"github.com/rogpeppe/go-internal/testscript"
)

// mkluks DISK KEYFILE: a fresh 20 MiB LUKS2 image file unlocked by the
// random key written to KEYFILE (cheap PBKDF2, for tests).
func cmdMkLUKS(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkluks DISK KEYFILE")
	}
	disk, key := ts.MkAbs(args[0]), ts.MkAbs(args[1])
	k := make([]byte, 32)
	rand.Read(k)
	ts.Check(os.WriteFile(key, k, 0o600))
	f, err := os.Create(disk)
	ts.Check(err)
	ts.Check(f.Truncate(20 << 20))
	f.Close()
	out, err := exec.Command("cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-file", key, disk).CombinedOutput()
	if err != nil {
		ts.Fatalf("cryptsetup luksFormat: %v: %s", err, out)
	}
}

// mkrsakey PRIV PUB: an RSA-2048 key pair as PEM, the OS vendor's PCR
// signing key.
func cmdMkRSAKey(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkrsakey PRIV PUB")
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	ts.Check(err)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(k))}), 0o600))
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644))
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
