package ekcert

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func platformFixture(t *testing.T, rsaCA bool) (*CA, []byte, *Platform, *x509.Certificate) {
	t.Helper()
	ca := newCA(t, rsaCA)
	ekKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ekc, err := Issue(ca, Request{PublicKey: &ekKey.PublicKey, TPM: TPMInfo{Model: "m", SpecFamily: "2.0"}})
	if err != nil {
		t.Fatal(err)
	}
	der, err := IssuePlatform(ca, PlatformRequest{Holder: ekc, Manufacturer: "Acme", Model: "CVM", Version: "1.0", Serial: "vm-0042",
		SpecMajor: 1, SpecMinor: 5, SpecRevision: 14, PlatformClass: [4]byte{0, 0, 0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePlatform(der)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Holds(ekc) {
		t.Error("holder is not the EK certificate")
	}
	return ca, der, p, ekc
}

func TestPlatformCertificate(t *testing.T) {
	for _, rsaCA := range []bool{false, true} {
		ca, der, p, _ := platformFixture(t, rsaCA)
		if err := p.CheckSignature(ca.Cert); err != nil {
			t.Errorf("signature: %v", err)
		}
		if p.Manufacturer != "Acme" || p.Model != "CVM" || p.Version != "1.0" || p.PlatformSer != "vm-0042" ||
			!p.CredType.Equal(OIDPlatformAttrCert) || p.SpecVersion != [3]int64{1, 5, 14} || hex.EncodeToString(p.Class) != "00000001" {
			t.Errorf("parsed %+v", p)
		}
		other := newCA(t, rsaCA)
		if p.CheckSignature(other.Cert) == nil {
			t.Error("verifies with another CA's key")
		}
		der[len(der)/2] ^= 1
		if q, err := ParsePlatform(der); err == nil && q.CheckSignature(ca.Cert) == nil {
			t.Error("a changed certificate still verifies")
		}
	}
}

// An independent RFC 5755 implementation, BouncyCastle's
// X509AttributeCertificateHolder (Debian's libbcpkix-java), parses the
// platform certificate, finds the EK certificate as its holder and verifies
// its signature with the CA certificate.
func TestPlatformCertificateBouncyCastle(t *testing.T) {
	java, err := exec.LookPath("java")
	if err != nil {
		t.Skip("java not installed: skipping the BouncyCastle check (apt-get install default-jre-headless libbcpkix-java)")
	}
	var cp []string
	for _, j := range []string{"bcprov.jar", "bcpkix.jar", "bcutil.jar"} {
		p := filepath.Join("/usr/share/java", j)
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s missing: skipping the BouncyCastle check (apt-get install libbcpkix-java)", p)
		}
		cp = append(cp, p)
	}
	dir := t.TempDir()
	var holders []string
	args := []string{"-cp", strings.Join(cp, ":"), filepath.Join(dir, "Check.java")}
	for i, rsaCA := range []bool{false, true} {
		ca, der, _, ekc := platformFixture(t, rsaCA)
		holders = append(holders, "holderSerial="+ekc.SerialNumber.Text(16)+"\n")
		pc, cc := filepath.Join(dir, fmt.Sprintf("platform%d.der", i)), filepath.Join(dir, fmt.Sprintf("ca%d.der", i))
		os.WriteFile(pc, der, 0o644)
		os.WriteFile(cc, ca.Cert.Raw, 0o644)
		args = append(args, pc, cc)
	}
	os.WriteFile(args[2], []byte(bcCheck), 0o644)
	out, err := exec.Command(java, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("BouncyCastle: %v\n%s", err, out)
	}
	t.Logf("BouncyCastle:\n%s", out)
	for _, w := range []string{"version=2", "2.23.133.2.25", "2.23.133.2.17", "holderSerial="} {
		if strings.Count(string(out), w) != 2 {
			t.Errorf("BouncyCastle output lacks %q twice:\n%s", w, out)
		}
	}
	for _, h := range holders {
		if !strings.Contains(string(out), h) {
			t.Errorf("BouncyCastle finds another holder than the EK certificate (%s):\n%s", strings.TrimSpace(h), out)
		}
	}
	if strings.Count(string(out), "signature=valid") != 2 {
		t.Errorf("BouncyCastle did not verify both signatures:\n%s", out)
	}
}

const bcCheck = `
import java.nio.file.*;
import java.security.cert.*;
import org.bouncycastle.cert.X509AttributeCertificateHolder;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.asn1.x509.Attribute;
import org.bouncycastle.operator.jcajce.JcaContentVerifierProviderBuilder;
import org.bouncycastle.jce.provider.BouncyCastleProvider;

public class Check {
    public static void main(String[] a) throws Exception {
        for (int i = 0; i + 1 < a.length; i += 2) check(a[i], a[i + 1]);
    }
    static void check(String acFile, String caFile) throws Exception {
        X509AttributeCertificateHolder ac = new X509AttributeCertificateHolder(Files.readAllBytes(Paths.get(acFile)));
        X509CertificateHolder ca = new X509CertificateHolder(Files.readAllBytes(Paths.get(caFile)));
        System.out.println("version=" + ac.getVersion());
        System.out.println("holderIssuer=" + ac.getHolder().getIssuer()[0]);
        System.out.println("holderSerial=" + ac.getHolder().getSerialNumber().toString(16));
        System.out.println("issuer=" + ac.getIssuer().getNames()[0]);
        for (Attribute at : ac.getAttributes()) System.out.println("attribute=" + at.getAttrType());
        boolean ok = ac.isSignatureValid(new JcaContentVerifierProviderBuilder().setProvider(new BouncyCastleProvider()).build(ca));
        System.out.println("signature=" + (ok ? "valid" : "INVALID"));
        if (!ok) System.exit(1);
    }
}
`
