package ekcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// extension returns the value of a certificate's extension and whether it
// is critical, parsed from the raw TBSCertificate with cryptobyte (not from
// crypto/x509's decoded fields).
func extension(t *testing.T, c *x509.Certificate, id asn1.ObjectIdentifier) ([]byte, bool) {
	t.Helper()
	in := cryptobyte.String(c.RawTBSCertificate)
	var tbs, exts cryptobyte.String
	if !in.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		t.Fatal("TBSCertificate")
	}
	// version [0], serial, signature, issuer, validity, subject, spki
	tbs.SkipOptionalASN1(cbasn1.Tag(0).ContextSpecific().Constructed())
	for i := 0; i < 6; i++ {
		var el cryptobyte.String
		var tag cbasn1.Tag
		if !tbs.ReadAnyASN1Element(&el, &tag) {
			t.Fatal("TBSCertificate field")
		}
	}
	var present bool
	if !tbs.ReadOptionalASN1(&exts, &present, cbasn1.Tag(3).ContextSpecific().Constructed()) || !present || !exts.ReadASN1(&exts, cbasn1.SEQUENCE) {
		t.Fatal("no extensions")
	}
	for !exts.Empty() {
		var ext cryptobyte.String
		var oid asn1.ObjectIdentifier
		var val []byte
		crit := false
		if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&oid) ||
			(ext.PeekASN1Tag(cbasn1.BOOLEAN) && !ext.ReadASN1Boolean(&crit)) || !ext.ReadASN1Bytes(&val, cbasn1.OCTET_STRING) {
			t.Fatal("malformed extension")
		}
		if oid.Equal(id) {
			return val, crit
		}
	}
	return nil, false
}

// The certificates have the fields of the DevID spec's profile (section
// 8.1), each read back independently of the code that wrote them.
func TestIssueDevIDProfile(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, rsaCA := range []bool{false, true} {
		ca := newCA(t, rsaCA)
		for _, c := range []struct {
			kind DevIDKind
			pub  any
		}{{KindIAK, &ecKey.PublicKey}, {KindIDevID, &rsaKey.PublicKey}, {KindIAK, &rsaKey.PublicKey}, {KindIDevID, &ecKey.PublicKey}} {
			cert, err := IssueDevID(ca, DevIDRequest{Kind: c.kind, PublicKey: c.pub, DeviceSerial: "vm-0042"})
			if err != nil {
				t.Fatal(err)
			}
			name := c.kind.String()
			// subject: exactly one RDN, serialNumber as PrintableString.
			var subj cryptobyte.String = cryptobyte.String(cert.RawSubject)
			var rdns, rdn, atv cryptobyte.String
			var oid asn1.ObjectIdentifier
			var val []byte
			if !subj.ReadASN1(&rdns, cbasn1.SEQUENCE) || !rdns.ReadASN1(&rdn, cbasn1.SET) || !rdns.Empty() ||
				!rdn.ReadASN1(&atv, cbasn1.SEQUENCE) || !atv.ReadASN1ObjectIdentifier(&oid) || !atv.ReadASN1Bytes(&val, cbasn1.PrintableString) {
				t.Fatalf("%s: subject is not one PrintableString attribute: %x", name, cert.RawSubject)
			}
			if !oid.Equal(asn1.ObjectIdentifier{2, 5, 4, 5}) || string(val) != "vm-0042" {
				t.Errorf("%s: subject %v=%q, want serialNumber=vm-0042", name, oid, val)
			}
			// subjectAltName: one otherName HardwareModuleName {tcg-tpm, serial}, not critical.
			san, crit := extension(t, cert, asn1.ObjectIdentifier{2, 5, 29, 17})
			if san == nil || crit {
				t.Fatalf("%s: subjectAltName missing or critical (%v)", name, crit)
			}
			s := cryptobyte.String(san)
			var gns, on, v, hmn cryptobyte.String
			var typeID, hwType asn1.ObjectIdentifier
			var hwSerial []byte
			if !s.ReadASN1(&gns, cbasn1.SEQUENCE) || !gns.ReadASN1(&on, cbasn1.Tag(0).ContextSpecific().Constructed()) || !gns.Empty() ||
				!on.ReadASN1ObjectIdentifier(&typeID) || !on.ReadASN1(&v, cbasn1.Tag(0).ContextSpecific().Constructed()) ||
				!v.ReadASN1(&hmn, cbasn1.SEQUENCE) || !hmn.ReadASN1ObjectIdentifier(&hwType) || !hmn.ReadASN1Bytes(&hwSerial, cbasn1.OCTET_STRING) || !hmn.Empty() {
				t.Fatalf("%s: subjectAltName is not one otherName HardwareModuleName: %x", name, san)
			}
			if typeID.String() != "1.3.6.1.5.5.7.8.4" || hwType.String() != "2.23.133.1.2" || string(hwSerial) != "vm-0042" {
				t.Errorf("%s: otherName %v { %v, %q }", name, typeID, hwType, hwSerial)
			}
			if len(cert.DNSNames)+len(cert.EmailAddresses)+len(cert.IPAddresses)+len(cert.URIs) != 0 {
				t.Errorf("%s: other subjectAltNames present", name)
			}
			// keyUsage critical, digitalSignature only.
			if _, crit := extension(t, cert, asn1.ObjectIdentifier{2, 5, 29, 15}); !crit || cert.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("%s: keyUsage %#x critical=%v", name, cert.KeyUsage, crit)
			}
			// policies and EKU.
			var pols []string
			for _, p := range cert.Policies {
				pols = append(pols, p.String())
			}
			want := []string{"2.23.133.11.1.1", "2.23.133.11.1.2"}
			if c.kind == KindIAK {
				want = []string{"2.23.133.11.1.1", "2.23.133.11.1.3"}
			}
			if !slices.Equal(pols, want) {
				t.Errorf("%s: policies %v, want %v", name, pols, want)
			}
			eku, _ := extension(t, cert, asn1.ObjectIdentifier{2, 5, 29, 37})
			hasAIK := len(cert.UnknownExtKeyUsage) == 1 && cert.UnknownExtKeyUsage[0].String() == "2.23.133.8.3" && len(cert.ExtKeyUsage) == 0
			if c.kind == KindIAK && !hasAIK {
				t.Errorf("%s: extendedKeyUsage %v, want only tcg-kp-AIKCertificate", name, cert.UnknownExtKeyUsage)
			}
			if c.kind == KindIDevID && eku != nil {
				t.Errorf("%s: has an extendedKeyUsage", name)
			}
			if !cert.BasicConstraintsValid || cert.IsCA || len(cert.AuthorityKeyId) == 0 {
				t.Errorf("%s: basicConstraints/authorityKeyIdentifier", name)
			}
			if !cert.NotAfter.Equal(EndOfTime) {
				t.Errorf("%s: notAfter %v", name, cert.NotAfter)
			}
			switch cert.SignatureAlgorithm {
			case x509.SHA256WithRSA, x509.ECDSAWithSHA384:
			default:
				t.Errorf("%s: signature algorithm %v (Keylime takes PKCS#1 v1.5 or ECDSA)", name, cert.SignatureAlgorithm)
			}
			res, err := CheckDevID(cert.Raw, DevIDCheck{Kind: c.kind, Want: c.pub, DeviceSerial: "vm-0042", Roots: []*x509.Certificate{ca.Cert}})
			if err != nil || !res.OK() {
				t.Errorf("%s: own check: %v %+v", name, err, res)
			}
		}
	}
}

// CheckDevID reports what is wrong: another kind's certificate, another
// serial, another key, another CA, an EK certificate.
func TestCheckDevIDFindings(t *testing.T) {
	ca, other := newCA(t, false), newCA(t, true)
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	idev, err := IssueDevID(ca, DevIDRequest{Kind: KindIDevID, PublicKey: &k1.PublicKey, DeviceSerial: "a"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := CheckDevID(idev.Raw, DevIDCheck{Kind: KindIAK, Want: &k2.PublicKey, DeviceSerial: "b", Roots: []*x509.Certificate{other.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(res.Problems, "\n")
	for _, w := range []string{`serialNumber is "a", want "b"`, "lack 2.23.133.11.1.3", "tcg-kp-AIKCertificate"} {
		if !strings.Contains(all, w) {
			t.Errorf("no finding %q in %q", w, all)
		}
	}
	if !res.KeyMismatch || res.ChainError == nil {
		t.Errorf("key mismatch %v, chain error %v", res.KeyMismatch, res.ChainError)
	}
	ekc, err := Issue(ca, Request{PublicKey: &k1.PublicKey, TPM: TPMInfo{Model: "m", SpecFamily: "2.0"}})
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := CheckDevID(ekc.Raw, DevIDCheck{Kind: KindIDevID}); res.OK() || !strings.Contains(strings.Join(res.Problems, "\n"), "HardwareModuleName") {
		t.Errorf("an EK certificate passes as an IDevID certificate: %v", res.Problems)
	}
}

func TestCheckDeviceSerial(t *testing.T) {
	for _, s := range []string{"vm-0001", "Acme Server 42", "a:b/c=d?"} {
		if err := CheckDeviceSerial(s); err != nil {
			t.Errorf("%q refused: %v", s, err)
		}
	}
	for _, s := range []string{"", "vm_1", "café", strings.Repeat("x", 65), "a*b"} {
		if err := CheckDeviceSerial(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
