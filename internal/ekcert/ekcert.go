// Package ekcert issues and checks TCG EK certificates: the EK Credential
// Profile's fields (critical SAN directoryName with the TPM's manufacturer,
// model and firmware version, tpmSpecification, tcg-kp-EKCertificate), CA
// signing through smallstep's KMS abstraction (key file, PKCS#11 or cloud
// KMS), and validation with go-attestation and crypto/x509.
package ekcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-attestation/oid"
	attestx509 "github.com/google/go-attestation/x509"
	"go.step.sm/crypto/x509util"
)

// TPMInfo is what a TPM build reports about itself; certificates carry it so
// that verifiers comparing with TPM2_GetCapability see no mismatch.
type TPMInfo struct {
	Manufacturer uint32 // TPM_PT_MANUFACTURER
	Model        string // TPM_PT_VENDOR_STRING_*
	FirmwareV1   uint32 // TPM_PT_FIRMWARE_VERSION_1
	SpecFamily   string
	SpecLevel    int
	SpecRevision int
}

func (i TPMInfo) manufacturerID() string { return fmt.Sprintf("id:%08X", i.Manufacturer) }
func (i TPMInfo) versionID() string      { return fmt.Sprintf("id:%08X", i.FirmwareV1) }

// MaxSerialOctets is the profile's limit on the serial number length.
const MaxSerialOctets = 20

// EndOfTime is the notAfter TPM vendors use: 9999-12-31 23:59:59 UTC.
var EndOfTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// Request describes a certificate to issue.
type Request struct {
	PublicKey crypto.PublicKey // the EK (*rsa.PublicKey or *ecdsa.PublicKey)
	TPM       TPMInfo
	NotBefore time.Time
	NotAfter  time.Time
	Serial    *big.Int // nil: random, positive, at most 20 octets
	Extra     []pkix.Extension
}

func utf8(s string) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(s)}
}

// sanExtension is the critical subjectAltName: one directoryName with three
// single-attribute RDNs whose values are UTF8Strings.
func sanExtension(info TPMInfo) (pkix.Extension, error) {
	dn := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: oid.TPMManufacturer, Value: utf8(info.manufacturerID())},
		{Type: oid.TPMModel, Value: utf8(info.Model)},
		{Type: oid.TPMVersion, Value: utf8(info.versionID())},
	}}
	return attestx509.MarshalSubjectAltName(&attestx509.SubjectAltName{DirectoryNames: []pkix.Name{dn}}, true)
}

type tpmSpecification struct {
	Family   string `asn1:"utf8"`
	Level    int
	Revision int
}

type attribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue `asn1:"set"`
}

func subjectDirectoryAttributes(info TPMInfo) (pkix.Extension, error) {
	spec, err := asn1.Marshal(tpmSpecification{Family: info.SpecFamily, Level: info.SpecLevel, Revision: info.SpecRevision})
	if err != nil {
		return pkix.Extension{}, err
	}
	val, err := asn1.Marshal([]attribute{{Type: oid.TPMSpecification, Values: []asn1.RawValue{{FullBytes: spec}}}})
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oid.SubjectDirectoryAttributes, Value: val}, nil
}

func randomSerial() (*big.Int, error) {
	// 159 random bits: positive and at most 20 octets in DER.
	max := new(big.Int).Lsh(big.NewInt(1), 159)
	for {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return nil, err
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func signatureAlgorithm(pub crypto.PublicKey) (x509.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return x509.SHA256WithRSA, nil // PKCS#1 v1.5: Keylime rejects PSS
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return x509.ECDSAWithSHA256, nil
		case elliptic.P384():
			return x509.ECDSAWithSHA384, nil
		case elliptic.P521():
			return x509.ECDSAWithSHA512, nil
		}
	}
	return 0, fmt.Errorf("unsupported CA key type %T", pub)
}

// Issue creates an EK certificate signed by the CA.
func Issue(ca *CA, req Request) (*x509.Certificate, error) {
	var ku x509.KeyUsage
	switch req.PublicKey.(type) {
	case *rsa.PublicKey:
		ku = x509.KeyUsageKeyEncipherment
	case *ecdsa.PublicKey:
		ku = x509.KeyUsageKeyAgreement
	default:
		return nil, fmt.Errorf("unsupported EK type %T", req.PublicKey)
	}
	serial := req.Serial
	if serial == nil {
		var err error
		if serial, err = randomSerial(); err != nil {
			return nil, err
		}
	}
	if serial.Sign() <= 0 || len(serial.Bytes()) > MaxSerialOctets || (len(serial.Bytes()) == MaxSerialOctets && serial.Bit(159) == 1) {
		return nil, errors.New("serial number must be positive and at most 20 octets")
	}
	notBefore, notAfter, err := validity(req.NotBefore, req.NotAfter)
	if err != nil {
		return nil, err
	}
	san, err := sanExtension(req.TPM)
	if err != nil {
		return nil, err
	}
	sda, err := subjectDirectoryAttributes(req.TPM)
	if err != nil {
		return nil, err
	}
	sigAlg, err := signatureAlgorithm(ca.Signer.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              ku,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oid.EKCertificate},
		BasicConstraintsValid: true,
		IsCA:                  false,
		ExtraExtensions:       append([]pkix.Extension{san, sda}, req.Extra...),
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
		SubjectKeyId:          []byte{}, // the profile does not ask for one; keep it out
		SignatureAlgorithm:    sigAlg,
	}
	if len(tmpl.AuthorityKeyId) == 0 {
		id, err := x509util.GenerateSubjectKeyID(ca.Cert.PublicKey)
		if err != nil {
			return nil, err
		}
		tmpl.AuthorityKeyId = id
	}
	cert, err := x509util.CreateCertificate(tmpl, ca.Cert, req.PublicKey, ca.Signer)
	if err != nil {
		return nil, fmt.Errorf("signing the EK certificate: %w", err)
	}
	return cert, nil
}

// CheckOptions say what Check compares an EK certificate with, beyond the
// TCG profile (go-attestation's ToEKCertificate plus the fields it does not
// check).
type CheckOptions struct {
	Roots         []*x509.Certificate // trust anchors; nil: no chain check
	Intermediates []*x509.Certificate
	Want          crypto.PublicKey // the EK the TPM derives; nil: not checked
	TPM           *TPMInfo         // expected TPM properties; nil: not checked
	Now           time.Time
}

// Result summarizes a parsed EK certificate.
type Result struct {
	Cert         *x509.Certificate
	Manufacturer string
	Model        string
	Version      string
	Spec         string
	Problems     []string // profile or property deviations (not fatal with --force)
	KeyMismatch  bool
	ChainError   error
}

// OK reports whether nothing at all was found.
func (r *Result) OK() bool { return len(r.Problems) == 0 && !r.KeyMismatch && r.ChainError == nil }

// Check parses and validates DER bytes.
func Check(der []byte, opt CheckOptions) (*Result, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("not an X.509 certificate: %w", err)
	}
	res := &Result{Cert: cert}
	ekc, err := attestx509.ToEKCertificate(cert)
	if err != nil {
		res.Problems = append(res.Problems, "TCG EK profile: "+err.Error())
	} else {
		res.Manufacturer, res.Model, res.Version = ekc.TpmManufacturer, ekc.TpmModel, ekc.TpmVersion
		s := ekc.TpmSpecification
		res.Spec = fmt.Sprintf("%s level %d revision %d", s.Family, s.Level, s.Revision)
		if !ekc.HasEkcExtendedKeyUsage {
			res.Problems = append(res.Problems, "TCG EK profile: extendedKeyUsage 2.23.133.8.1 (tcg-kp-EKCertificate) missing")
		}
		if opt.TPM != nil {
			t := opt.TPM
			if res.Manufacturer != t.manufacturerID() {
				res.Problems = append(res.Problems, fmt.Sprintf("tpmManufacturer is %q, the TPM reports %q", res.Manufacturer, t.manufacturerID()))
			}
			if res.Version != t.versionID() {
				res.Problems = append(res.Problems, fmt.Sprintf("tpmVersion is %q, the TPM reports %q", res.Version, t.versionID()))
			}
			if s.Family != t.SpecFamily || s.Level != t.SpecLevel || s.Revision != t.SpecRevision {
				res.Problems = append(res.Problems, fmt.Sprintf("tpmSpecification is %s, the TPM implements %s level %d revision %d", res.Spec, t.SpecFamily, t.SpecLevel, t.SpecRevision))
			}
		}
	}
	if n := len(cert.SerialNumber.Bytes()); n > MaxSerialOctets {
		res.Problems = append(res.Problems, fmt.Sprintf("serial number has %d octets, the profile allows %d", n, MaxSerialOctets))
	}
	if cert.SignatureAlgorithm == x509.SHA256WithRSAPSS || cert.SignatureAlgorithm == x509.SHA384WithRSAPSS || cert.SignatureAlgorithm == x509.SHA512WithRSAPSS {
		res.Problems = append(res.Problems, "signed with RSA-PSS, which Keylime rejects (use PKCS#1 v1.5)")
	}
	if opt.Want != nil && !samePublicKey(cert.PublicKey, opt.Want) {
		res.KeyMismatch = true
	}
	if opt.Roots != nil {
		res.ChainError = verifyChain(cert, opt)
	}
	return res, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	if k, ok := a.(eq); ok {
		return k.Equal(b)
	}
	return false
}

// verifyChain checks the signature chain. The SAN is critical and holds
// only a directoryName, which crypto/x509 does not handle: it is checked
// above and removed from the unhandled list here.
func verifyChain(cert *x509.Certificate, opt CheckOptions) error {
	c := *cert
	c.UnhandledCriticalExtensions = nil
	for _, e := range cert.UnhandledCriticalExtensions {
		if !e.Equal(oid.SubjectAltName) {
			c.UnhandledCriticalExtensions = append(c.UnhandledCriticalExtensions, e)
		}
	}
	roots := x509.NewCertPool()
	for _, r := range opt.Roots {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, r := range opt.Intermediates {
		inter.AddCert(r)
	}
	now := opt.Now
	if now.IsZero() {
		now = time.Now()
	}
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// validity fills in a certificate's validity: from now (to the second)
// when notBefore is zero, to EndOfTime (no well-defined expiration, as
// TPM vendors do) when notAfter is zero.
func validity(notBefore, notAfter time.Time) (time.Time, time.Time, error) {
	if notBefore.IsZero() {
		notBefore = time.Now().UTC().Truncate(time.Second)
	}
	if notAfter.IsZero() {
		notAfter = EndOfTime
	}
	if !notAfter.After(notBefore) {
		return notBefore, notAfter, errors.New("certificate validity: notAfter must be after notBefore")
	}
	return notBefore, notAfter, nil
}
