package ekcert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/softkms" // key files
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"
)

// CA is an issuing certificate authority: its certificate, the chain above
// it (intermediates, not the root) and a signer for its key.
type CA struct {
	Cert   *x509.Certificate
	Chain  []*x509.Certificate
	Signer crypto.Signer
}

// ReadCertificates reads one or more PEM or DER certificates from a file.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := input.ReadFile(path, "certificate file", 1<<20)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w; pass a PEM or DER X.509 certificate", path, err)
	}
	return certs, nil
}

// ParseCertificates accepts PEM (one or more CERTIFICATE blocks) or DER.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) > 0 {
		return certs, nil
	}
	c, err := x509.ParseCertificate(data)
	if err != nil {
		return nil, errors.New("no certificate found (expected PEM or DER)")
	}
	return []*x509.Certificate{c}, nil
}

// isKMSURI tells a KMS URI ("pkcs11:...", "awskms:...") from a file path.
func isKMSURI(s string) bool {
	scheme, _, ok := strings.Cut(s, ":")
	if !ok || strings.ContainsAny(scheme, "/.\\") || len(scheme) < 3 {
		return false
	}
	_, err := apiv1.TypeOf(s)
	return err == nil
}

// LoadSigner returns a signer for a CA key given as a PEM file path or a
// KMS URI supported by go.step.sm/crypto/kms in this build.
func LoadSigner(ctx context.Context, key string) (crypto.Signer, error) {
	if isKMSURI(key) {
		typ, _ := apiv1.TypeOf(key)
		if _, ok := apiv1.LoadKeyManagerNewFunc(typ); !ok {
			return nil, fmt.Errorf("CA key %s: this build has no %s support (it handles key files; build with -tags pkcs11 for PKCS#11)", redactURI(key), typ)
		}
		// Files the URI names are opened by the KMS library: refuse the
		// ones that are not regular files before it can block on them.
		for _, m := range uriFile.FindAllStringSubmatch(key, -1) {
			what := map[string]string{"pin-source": "PIN file", "module-path": "PKCS#11 module"}[m[1]]
			if err := input.Check(m[2], what); err != nil {
				return nil, fmt.Errorf("CA key %s: %w", redactURI(key), err)
			}
		}
		km, err := kms.New(ctx, apiv1.Options{Type: typ, URI: key})
		if err != nil {
			return nil, fmt.Errorf("CA key %s: %s", redactURI(key), redactURI(err.Error()))
		}
		s, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: key})
		if err != nil {
			return nil, fmt.Errorf("CA key %s: %s", redactURI(key), redactURI(err.Error()))
		}
		return s, nil
	}
	data, err := input.ReadFile(key, "CA key file", 1<<20)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	km, err := kms.New(ctx, apiv1.Options{Type: apiv1.SoftKMS})
	if err != nil {
		return nil, err
	}
	s, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKeyPEM: data})
	if err != nil {
		return nil, fmt.Errorf("%s: not a usable private key: %v; pass an unencrypted PEM key (PKCS#8, PKCS#1 or SEC 1), or a KMS URI", key, err)
	}
	return s, nil
}

// uriFile finds the file paths a PKCS#11 URI names.
var uriFile = regexp.MustCompile(`(pin-source|module-path)=([^;&?]+)`)

var pinValue = regexp.MustCompile(`(?i)(pin-value=)[^;&?]*`)

// redactURI drops PIN values (path or query attributes) from a URI before
// it is printed.
func redactURI(u string) string { return pinValue.ReplaceAllString(u, "${1}REDACTED") }

// LoadCA reads the CA certificate file (the issuing CA first, then any
// intermediates) and its key, and checks that they belong together and can
// issue certificates now.
func LoadCA(ctx context.Context, certPath, key string, now time.Time) (*CA, error) {
	certs, err := ReadCertificates(certPath)
	if err != nil {
		return nil, err
	}
	signer, err := LoadSigner(ctx, key)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: certs[0], Chain: certs[1:], Signer: signer}
	if err := ca.check(certPath, now); err != nil {
		return nil, err
	}
	return ca, nil
}

func (ca *CA) check(certPath string, now time.Time) error {
	c := ca.Cert
	if !samePublicKey(ca.Signer.Public(), c.PublicKey) {
		return fmt.Errorf("%s: the CA key does not match this CA certificate (use the key the certificate was issued for)", certPath)
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("%s: not a CA certificate (basicConstraints CA:TRUE missing)", certPath)
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s: CA certificate lacks keyUsage keyCertSign", certPath)
	}
	if now.IsZero() {
		now = time.Now()
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%s: CA certificate is not valid before %s", certPath, c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("%s: CA certificate expired on %s; renew it or use another CA", certPath, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if _, err := signatureAlgorithm(ca.Signer.Public()); err != nil {
		return fmt.Errorf("%s: %w", certPath, err)
	}
	return nil
}

// NewSelfSigned creates a throwaway root CA for trying the tool.
func NewSelfSigned(subject string, rsaKey bool, validity time.Duration) (*x509.Certificate, crypto.Signer, error) {
	var signer crypto.Signer
	var err error
	if rsaKey {
		signer, err = rsa.GenerateKey(rand.Reader, 3072)
	} else {
		signer, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	if err != nil {
		return nil, nil, err
	}
	sigAlg, _ := signatureAlgorithm(signer.Public())
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: subject},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    sigAlg,
	}
	cert, err := x509util.CreateCertificate(tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, nil, err
	}
	return cert, signer, nil
}

// EncodeKey returns the PEM (PKCS#8) form of a private key.
func EncodeKey(k crypto.Signer) ([]byte, error) {
	blk, err := pemutil.Serialize(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(blk), nil
}

// EncodeCert returns the PEM form of a certificate.
func EncodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
