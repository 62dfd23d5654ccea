package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/vtpm-mfg/vtpm-mfg/internal/blockfs"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
	"github.com/vtpm-mfg/vtpm-mfg/internal/xts"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"vtpm-mfg": func() {
			// Every message of every script run is walked for flags its
			// command does not have; findings go to $FLAGCHECK.
			var msgs bytes.Buffer
			code := run(os.Args, os.Stdin, os.Stdout, io.MultiWriter(os.Stderr, &msgs))
			if p := os.Getenv("FLAGCHECK"); p != "" {
				if bad := foreignFlags(os.Args[1:], msgs.String()); len(bad) > 0 {
					f, _ := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
					fmt.Fprintf(f, "%q: names %v: %q\n", os.Args[1:], bad, msgs.String())
					f.Close()
				}
			}
			os.Exit(code)
		},
	})
}

func TestScripts(t *testing.T) {
	shared := sharedvec.Dir()
	if shared == "" {
		t.Log("reference vectors not available: scripts marked [shared] are skipped")
	}
	flagcheck := filepath.Join(t.TempDir(), "flagcheck")
	defer func() {
		if b, err := os.ReadFile(flagcheck); err == nil {
			t.Errorf("messages that suggest a flag their command does not have:\n%s", b)
		}
	}()
	testscript.Run(t, testscript.Params{
		Dir: "../../testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("FLAGCHECK", flagcheck)
			env.Setenv("SHARED", shared)
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "shared" {
				return shared != "", nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"perm":       cmdPerm,
			"cmphead":    cmdCmpHead,
			"size":       cmdSize,
			"flipbyte":   cmdFlipByte,
			"link":       cmdLink,
			"mkstate":    cmdMkState,
			"mkca":       cmdMkCA,
			"issuebig":   cmdIssueBig,
			"issueplain": cmdIssuePlain,
			"mkfifo":     cmdMkfifo,
			"mkluks":     cmdMkLUKS,
			"mkrsakey":   cmdMkRSAKey,
		},
	})
}

// mkfifo NAME...: make named pipes (with no writer).
func cmdMkfifo(ts *testscript.TestScript, neg bool, args []string) {
	for _, a := range args {
		ts.Check(syscall.Mkfifo(ts.MkAbs(a), 0o600))
	}
}

// perm FILE MODE: the file's permission bits are MODE (octal).
func cmdPerm(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: perm FILE MODE")
	}
	st, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	want, _ := strconv.ParseUint(args[1], 8, 32)
	if (st.Mode().Perm() == os.FileMode(want)) == neg {
		ts.Fatalf("%s has mode %o", args[0], st.Mode().Perm())
	}
}

// size FILE N: the file is N bytes long.
func cmdSize(ts *testscript.TestScript, neg bool, args []string) {
	st, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	n, _ := strconv.ParseInt(args[1], 10, 64)
	if (st.Size() == n) == neg {
		ts.Fatalf("%s is %d bytes", args[0], st.Size())
	}
}

// cmphead N A B: the first N bytes of A and B are equal.
func cmdCmpHead(ts *testscript.TestScript, neg bool, args []string) {
	n, _ := strconv.Atoi(args[0])
	a, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	b, err := os.ReadFile(ts.MkAbs(args[2]))
	ts.Check(err)
	eq := len(a) >= n && len(b) >= n && bytes.Equal(a[:n], b[:n])
	if eq == neg {
		ts.Fatalf("first %d bytes of %s and %s: equal=%v", n, args[1], args[2], eq)
	}
}

// mkstate KIND KEYFILE OUT: writes a deliberately broken state image:
// size0 (valid magic, NVChip size 0), garbage (sector 0 random),
// short (32 sectors).
func cmdMkState(ts *testscript.TestScript, neg bool, args []string) {
	key, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	img, err := blockfs.Encode(make([]byte, blockfs.NVSize), key)
	ts.Check(err)
	switch args[0] {
	case "size0":
		c, _ := xts.New(key)
		c.EncryptSectors(img[:512], blockfs.Metadata{Magic: blockfs.Magic}.Encode())
	case "garbage":
		rand.Read(img[:512])
	case "short":
		img = img[:32*512]
	default:
		ts.Fatalf("unknown kind %s", args[0])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), img, 0o600))
}

// mkca KIND CERT KEY: a CA that must be refused: expired, notca (a leaf).
func cmdMkCA(ts *testscript.TestScript, neg bool, args []string) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "bad CA"},
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(48 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
	switch args[0] {
	case "expired":
		tmpl.NotAfter = now.Add(-time.Hour)
	case "notca":
		tmpl.IsCA = false
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	default:
		ts.Fatalf("unknown kind %s", args[0])
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	ts.Check(err)
	kp, _ := ekcert.EncodeKey(k)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), kp, 0o600))
}

// caAndKey loads the CA (args[0], args[1]) and the public key in the PEM
// file args[2], the inputs of the issue* commands.
func caAndKey(ts *testscript.TestScript, args []string) (*ekcert.CA, crypto.PublicKey) {
	if len(args) != 4 {
		ts.Fatalf("usage: CACERT CAKEY PUBPEM OUT")
	}
	ca, err := ekcert.LoadCA(context.Background(), ts.MkAbs(args[0]), ts.MkAbs(args[1]), time.Now())
	ts.Check(err)
	pb, err := os.ReadFile(ts.MkAbs(args[2]))
	ts.Check(err)
	blk, _ := pem.Decode(pb)
	if blk == nil {
		ts.Fatalf("%s: no PEM block", args[2])
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	ts.Check(err)
	return ca, pub
}

// issuebig CACERT CAKEY PUBPEM OUT: a profile-compliant EK certificate for
// PUBPEM that is larger than an NV index can hold.
func cmdIssueBig(ts *testscript.TestScript, neg bool, args []string) {
	ca, pub := caAndKey(ts, args)
	cert, err := ekcert.Issue(ca, ekcert.Request{PublicKey: pub, TPM: pipeline.TPMInfo(nv.SVSMPoC),
		Extra: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: mustASN1(bytes.Repeat([]byte("x"), 2100))}}})
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[3]), cert.Raw, 0o644))
}

func mustASN1(b []byte) []byte {
	v, err := asn1.Marshal(b)
	if err != nil {
		panic(err)
	}
	return v
}

// issueplain CACERT CAKEY PUBPEM OUT: an ordinary certificate (no TCG
// fields) for PUBPEM, signed by the CA.
func cmdIssuePlain(ts *testscript.TestScript, neg bool, args []string) {
	ca, pub := caAndKey(ts, args)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "plain"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Signer)
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[3]), der, 0o644))
}

// flipbyte FILE OFFSET inverts one byte of a file in place.
func cmdFlipByte(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: flipbyte FILE OFFSET")
	}
	off, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_RDWR, 0)
	ts.Check(err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	ts.Check(err)
	b[0] ^= 0xff
	_, err = f.WriteAt(b, off)
	ts.Check(err)
}

// link OLD NEW makes a hard link.
func cmdLink(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: link OLD NEW")
	}
	ts.Check(os.Link(ts.MkAbs(args[0]), ts.MkAbs(args[1])))
}
