package pipeline

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	attestx509 "github.com/google/go-attestation/x509"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

func testCA(t testing.TB, rsaKey bool) *ekcert.CA {
	cert, key, err := ekcert.NewSelfSigned("pipeline test CA", rsaKey, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kp, _ := ekcert.EncodeKey(key)
	os.WriteFile(filepath.Join(dir, "ca.key"), kp, 0o600)
	os.WriteFile(filepath.Join(dir, "ca.pem"), ekcert.EncodeCert(cert), 0o644)
	ca, err := ekcert.LoadCA(context.Background(), filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func manufacture(t testing.TB, p *nv.Profile, ca *ekcert.CA) (*nv.Image, []Issued) {
	im, issued, err := Manufacture(ManufactureOptions{Profile: p, Algs: ek.Algs, CertOptions: CertOptions{CA: ca}})
	if err != nil {
		t.Fatal(err)
	}
	return im, issued
}

func TestManufacturedCertificatesParseEverywhere(t *testing.T) {
	for _, rsaCA := range []bool{false, true} {
		ca := testCA(t, rsaCA)
		for _, p := range nv.All() {
			im, issued := manufacture(t, p, ca)
			// the serialized image parses back for its profile only
			back, err := nv.Detect(im.Bytes())
			if err != nil || back.Profile != p {
				t.Fatalf("%s: manufactured image: %v", p.Name, err)
			}
			if f := Verify(back, VerifyOptions{CA: []*x509.Certificate{ca.Cert}, Algs: ek.Algs}); len(f) != 0 {
				t.Fatalf("%s: findings on a fresh image: %v", p.Name, f)
			}
			for _, is := range issued {
				der := back.LookupIndex(CertIndex(is.Alg)).Data
				if !bytes.Equal(der, is.Cert.Raw) {
					t.Fatal("stored certificate differs from the issued one")
				}
				ix := back.LookupIndex(CertIndex(is.Alg))
				if ix.Attributes != 0x62072801 {
					t.Errorf("attributes 0x%08x", ix.Attributes)
				}
				// go-attestation
				ekc, err := attestx509.ParseEKCertificate(der)
				if err != nil {
					t.Fatalf("go-attestation: %v", err)
				}
				if ekc.TpmManufacturer != "id:58595A20" || ekc.TpmModel != "xCG fTPM" || ekc.TpmSpecification.Revision != p.SpecRevision || !ekc.HasEkcExtendedKeyUsage {
					t.Errorf("go-attestation view: %+v", ekc)
				}
				// crypto/x509 with the documented SAN handling
				c, err := x509.ParseCertificate(der)
				if err != nil {
					t.Fatal(err)
				}
				if rsaCA && c.SignatureAlgorithm != x509.SHA256WithRSA {
					t.Errorf("RSA CA must sign with PKCS#1 v1.5, got %v", c.SignatureAlgorithm)
				}
				if len(c.UnhandledCriticalExtensions) != 1 || !c.UnhandledCriticalExtensions[0].Equal([]int{2, 5, 29, 17}) {
					t.Errorf("unhandled critical extensions: %v", c.UnhandledCriticalExtensions)
				}
				c.UnhandledCriticalExtensions = nil
				roots := x509.NewCertPool()
				roots.AddCert(ca.Cert)
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					t.Errorf("crypto/x509 verify: %v", err)
				}
				if len(c.SerialNumber.Bytes()) > 20 || c.SerialNumber.Sign() <= 0 || c.Version != 3 || len(c.RawSubject) != 2 {
					t.Errorf("serial/version/subject: %v %d %x", c.SerialNumber, c.Version, c.RawSubject)
				}
				opensslCheck(t, ca, der)
			}
		}
	}
}

// opensslCheck parses and verifies the certificate with the openssl tool.
func opensslCheck(t *testing.T, ca *ekcert.CA, der []byte) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Log("openssl not installed: skipping the openssl cross-check")
		return
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ek.der"), der, 0o644)
	os.WriteFile(filepath.Join(dir, "ca.pem"), ekcert.EncodeCert(ca.Cert), 0o644)
	out, err := exec.Command(bin, "x509", "-inform", "DER", "-in", filepath.Join(dir, "ek.der"), "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509: %v\n%s", err, out)
	}
	for _, want := range []string{"X509v3 Subject Alternative Name: critical", "2.23.133.2.1=id:58595A20", "2.23.133.8.1", "CA:FALSE"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("openssl output lacks %q", want)
		}
	}
	pemOut, err := exec.Command(bin, "x509", "-inform", "DER", "-in", filepath.Join(dir, "ek.der"), "-out", filepath.Join(dir, "ek.pem")).CombinedOutput()
	if err != nil {
		t.Fatalf("%v %s", err, pemOut)
	}
	if out, err := exec.Command(bin, "verify", "-CAfile", filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ek.pem")).CombinedOutput(); err != nil {
		t.Errorf("openssl verify: %v\n%s", err, out)
	}
}

func TestVerifyFindings(t *testing.T) {
	ca := testCA(t, false)
	other := testCA(t, false)
	im, _ := manufacture(t, nv.SVSMPoC, ca)
	im2, _ := manufacture(t, nv.SVSMPoC, ca)
	roots := []*x509.Certificate{ca.Cert}

	// a certificate for another TPM's key
	swapped, _ := nv.Parse(nv.SVSMPoC, im.Bytes())
	if err := PutCert(swapped, ek.RSA2048, im2.LookupIndex(CertIndex(ek.RSA2048)).Data, true); err != nil {
		t.Fatal(err)
	}
	f := Verify(swapped, VerifyOptions{CA: roots, Algs: ek.Algs})
	if len(f) != 1 || !strings.Contains(f[0], "but this TPM derives EK") {
		t.Errorf("swapped certificate: %v", f)
	}
	// a foreign CA
	f = Verify(im, VerifyOptions{CA: []*x509.Certificate{other.Cert}, Algs: ek.Algs})
	if len(f) != 2 || !strings.Contains(f[0], "does not chain") {
		t.Errorf("foreign CA: %v", f)
	}
	// missing certificate
	bare, _ := nv.Manufacture(nv.SVSMPoC)
	f = Verify(bare, VerifyOptions{CA: roots, Algs: ek.Algs})
	if len(f) != 2 || !strings.Contains(f[0], "no EK certificate") {
		t.Errorf("bare image: %v", f)
	}
	// wrong attributes
	odd, _ := nv.Manufacture(nv.SVSMPoC)
	odd.DefineIndex(nv.IndexSpec{Handle: CertIndex(ek.ECCP256), Attributes: nv.AttrEKCert | 0x2, Data: im.LookupIndex(CertIndex(ek.ECCP256)).Data})
	f = Verify(odd, VerifyOptions{CA: roots, Algs: []ek.Alg{ek.ECCP256}})
	if len(f) == 0 || !strings.Contains(f[0], "a manufacturer sets 0x62072001") {
		t.Errorf("odd attributes: %v", f)
	}
}

func TestPutCertReplacesKeepingAttributes(t *testing.T) {
	ca := testCA(t, false)
	im, issued := manufacture(t, nv.SVSM2026, ca)
	free := im.FreeBytes()
	if err := PutCert(im, ek.RSA2048, issued[0].Cert.Raw, false); err != nil {
		t.Fatal(err)
	}
	if a := im.LookupIndex(CertIndex(ek.RSA2048)).Attributes; a != 0x62072801 {
		t.Errorf("lock lost: 0x%08x", a)
	}
	if im.FreeBytes() != free {
		t.Error("replacing with the same certificate changed the free space")
	}
	if err := PutCert(im, ek.RSA2048, make([]byte, 2049), true); err == nil || !strings.Contains(err.Error(), "MAX_NV_INDEX_SIZE") {
		t.Errorf("oversized: %v", err)
	}
}

func TestDescribeHidesSecrets(t *testing.T) {
	ca := testCA(t, false)
	im, _ := manufacture(t, nv.SVSMPoC, ca)
	r, err := Describe(im)
	if err != nil {
		t.Fatal(err)
	}
	text := r.Text()
	for _, f := range []string{"EPSeed", "SPSeed", "PPSeed", "phProof", "shProof", "ehProof"} {
		secret := im.TPM2B(f)
		for _, enc := range []string{strings.ToLower(hexs(secret[:8])), strings.ToUpper(hexs(secret[:8]))} {
			if strings.Contains(text, enc) {
				t.Errorf("%s appears in the report", f)
			}
		}
	}
	if len(r.EKs) != 2 || r.EKs[0].Certified == nil || !*r.EKs[0].Certified {
		t.Errorf("EKs: %+v", r.EKs)
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	s := make([]byte, 0, 2*len(b))
	for _, c := range b {
		s = append(s, digits[c>>4], digits[c&15])
	}
	return string(s)
}

func BenchmarkManufacture(b *testing.B) {
	ca := testCA(b, false)
	for i := 0; i < b.N; i++ {
		manufacture(b, nv.SVSMPoC, ca)
	}
}
