package ekcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.step.sm/crypto/x509util"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Device identity certificates: the IDevID certificate (IEEE 802.1AR) and
// the IAK certificate, as the TCG "TPM 2.0 Keys for Device Identity and
// Attestation" (version 1.00 revision 12; "DevID spec") profiles them in
// section 8 (8.1 fields of the DevID certificates).

// OIDs of the device identity profile.
var (
	// OIDHardwareModuleName is id-on-hardwareModuleName (RFC 4108
	// section 5), an otherName of the subjectAltName (DevID spec 8.1).
	OIDHardwareModuleName = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}
	// OIDHwTypeTPM is tcg-tpm (2.23.133.1.2), the hwType of a TPM-resident
	// DevID key (DevID spec 8.1).
	OIDHwTypeTPM = asn1.ObjectIdentifier{2, 23, 133, 1, 2}
	// Certificate policies of the TCG verified-TPM family (DevID spec
	// 8.1 certificatePolicies): the key resides in a TPM (residency),
	// is fixedTPM (fixed), is a restricted TPM key (restricted).
	OIDVerifiedTPMResidency  = asn1.ObjectIdentifier{2, 23, 133, 11, 1, 1}
	OIDVerifiedTPMFixed      = asn1.ObjectIdentifier{2, 23, 133, 11, 1, 2}
	OIDVerifiedTPMRestricted = asn1.ObjectIdentifier{2, 23, 133, 11, 1, 3}
	// OIDAIKCertificate is tcg-kp-AIKCertificate (2.23.133.8.3), the
	// extendedKeyUsage of an IAK certificate (DevID spec 8.1).
	OIDAIKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 3}

	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// DevIDKind is the kind of device identity certificate.
type DevIDKind int

const (
	KindIDevID DevIDKind = iota
	KindIAK
)

func (k DevIDKind) String() string {
	if k == KindIAK {
		return "IAK"
	}
	return "IDevID"
}

// MaxDeviceSerial is ub-serial-number of X.520: the subject's serialNumber
// attribute is a PrintableString of 1..64 characters.
const MaxDeviceSerial = 64

// CheckDeviceSerial refuses a device serial the subject's serialNumber
// attribute (PrintableString, X.520) cannot hold.
func CheckDeviceSerial(s string) error {
	if s == "" {
		return errors.New("device serial is empty")
	}
	if len(s) > MaxDeviceSerial {
		return fmt.Errorf("device serial %q has %d characters; the certificate subject's serialNumber holds at most %d (X.520 ub-serial-number)", s, len(s), MaxDeviceSerial)
	}
	for _, c := range s {
		if !printable(c) {
			return fmt.Errorf("device serial %q has %q, which a PrintableString (the subject's serialNumber, X.520) cannot hold: use letters, digits, space and ' ( ) + , - . / : = ?", s, c)
		}
	}
	return nil
}

func printable(c rune) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case ' ', '\'', '(', ')', '+', ',', '-', '.', '/', ':', '=', '?':
		return true
	}
	return false
}

// DevIDRequest describes a device identity certificate to issue.
type DevIDRequest struct {
	Kind         DevIDKind
	PublicKey    crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey
	DeviceSerial string           // subject serialNumber and hwSerialNum
	NotBefore    time.Time
	NotAfter     time.Time
}

// hardwareModuleName is RFC 4108's HardwareModuleName.
type hardwareModuleName struct {
	HwType      asn1.ObjectIdentifier
	HwSerialNum []byte
}

// devIDSAN is the subjectAltName of DevID spec 8.1: GeneralNames with one
// otherName [0] { type-id id-on-hardwareModuleName, value [0] EXPLICIT
// HardwareModuleName { tcg-tpm, device serial } } (RFC 4108 section 5,
// RFC 5280 section 4.2.1.6). Not critical: the subject is not empty.
func devIDSAN(serial string) (pkix.Extension, error) {
	hmn, err := asn1.Marshal(hardwareModuleName{HwType: OIDHwTypeTPM, HwSerialNum: []byte(serial)})
	if err != nil {
		return pkix.Extension{}, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(gns *cryptobyte.Builder) {
		gns.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(on *cryptobyte.Builder) {
			on.AddASN1ObjectIdentifier(OIDHardwareModuleName)
			on.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(v *cryptobyte.Builder) {
				v.AddBytes(hmn)
			})
		})
	})
	der, err := b.Bytes()
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oidSubjectAltName, Value: der}, nil
}

// HardwareModuleNames returns the HardwareModuleName otherNames of a
// certificate's subjectAltName as (hwType, hwSerialNum) pairs.
func HardwareModuleNames(cert *x509.Certificate) ([]asn1.ObjectIdentifier, [][]byte, error) {
	var types []asn1.ObjectIdentifier
	var serials [][]byte
	for _, e := range cert.Extensions {
		if !e.Id.Equal(oidSubjectAltName) {
			continue
		}
		in := cryptobyte.String(e.Value)
		var gns cryptobyte.String
		if !in.ReadASN1(&gns, cbasn1.SEQUENCE) || !in.Empty() {
			return nil, nil, errors.New("subjectAltName: malformed GeneralNames")
		}
		for !gns.Empty() {
			var gn cryptobyte.String
			var tag cbasn1.Tag
			if !gns.ReadAnyASN1(&gn, &tag) {
				return nil, nil, errors.New("subjectAltName: malformed GeneralName")
			}
			if tag != cbasn1.Tag(0).ContextSpecific().Constructed() {
				continue
			}
			var typeID asn1.ObjectIdentifier
			var val, hmn cryptobyte.String
			if !gn.ReadASN1ObjectIdentifier(&typeID) || !gn.ReadASN1(&val, cbasn1.Tag(0).ContextSpecific().Constructed()) || !gn.Empty() {
				return nil, nil, errors.New("subjectAltName: malformed otherName")
			}
			if !typeID.Equal(OIDHardwareModuleName) {
				continue
			}
			var hwType asn1.ObjectIdentifier
			var hwSerial []byte
			if !val.ReadASN1(&hmn, cbasn1.SEQUENCE) || !val.Empty() ||
				!hmn.ReadASN1ObjectIdentifier(&hwType) || !hmn.ReadASN1Bytes(&hwSerial, cbasn1.OCTET_STRING) || !hmn.Empty() {
				return nil, nil, errors.New("subjectAltName: malformed HardwareModuleName")
			}
			types, serials = append(types, hwType), append(serials, hwSerial)
		}
	}
	return types, serials, nil
}

// devIDPolicies are the certificate policies of DevID spec 8.1: residency
// for both, plus fixed (IDevID, a fixedTPM key) or restricted (IAK).
func devIDPolicies(kind DevIDKind) []asn1.ObjectIdentifier {
	if kind == KindIAK {
		return []asn1.ObjectIdentifier{OIDVerifiedTPMResidency, OIDVerifiedTPMRestricted}
	}
	return []asn1.ObjectIdentifier{OIDVerifiedTPMResidency, OIDVerifiedTPMFixed}
}

func devIDPolicyOIDs(kind DevIDKind) []x509.OID {
	var out []x509.OID
	for _, p := range devIDPolicies(kind) {
		ints := make([]uint64, len(p))
		for i, v := range p {
			ints[i] = uint64(v)
		}
		o, err := x509.OIDFromInts(ints)
		if err != nil {
			panic(err)
		}
		out = append(out, o)
	}
	return out
}

// IssueDevID creates an IDevID or IAK certificate signed by the CA, with
// the fields of DevID spec section 8.1: subject serialNumber = the device
// serial (IEEE 802.1AR 8.6), subjectAltName otherName HardwareModuleName
// {tcg-tpm, device serial}, critical keyUsage digitalSignature, the
// verified-TPM certificate policies, extendedKeyUsage tcg-kp-AIKCertificate
// for the IAK, basicConstraints CA:FALSE, authorityKeyIdentifier, notAfter
// 99991231235959Z unless told otherwise. The CA signs with PKCS#1 v1.5 or
// ECDSA, which Keylime's verify_cert requires.
func IssueDevID(ca *CA, req DevIDRequest) (*x509.Certificate, error) {
	switch req.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, fmt.Errorf("unsupported %s key type %T", req.Kind, req.PublicKey)
	}
	if err := CheckDeviceSerial(req.DeviceSerial); err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notBefore, notAfter, err := validity(req.NotBefore, req.NotAfter)
	if err != nil {
		return nil, err
	}
	san, err := devIDSAN(req.DeviceSerial)
	if err != nil {
		return nil, err
	}
	sigAlg, err := signatureAlgorithm(ca.Signer.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{SerialNumber: req.DeviceSerial},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		Policies:              devIDPolicyOIDs(req.Kind),
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{san},
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
		SubjectKeyId:          []byte{},
		SignatureAlgorithm:    sigAlg,
	}
	if req.Kind == KindIAK {
		tmpl.UnknownExtKeyUsage = []asn1.ObjectIdentifier{OIDAIKCertificate}
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
		return nil, fmt.Errorf("signing the %s certificate: %w", req.Kind, err)
	}
	return cert, nil
}

// DevIDCheck says what CheckDevID compares a certificate with.
type DevIDCheck struct {
	Kind          DevIDKind
	Want          crypto.PublicKey // the derived key; nil: not checked
	DeviceSerial  string           // "": not checked
	Roots         []*x509.Certificate
	Intermediates []*x509.Certificate
	Now           time.Time
}

// DevIDResult is a parsed device identity certificate.
type DevIDResult struct {
	Cert         *x509.Certificate
	DeviceSerial string // the subject's serialNumber
	HwSerial     string // the HardwareModuleName's hwSerialNum
	Problems     []string
	KeyMismatch  bool
	ChainError   error
}

// OK reports whether nothing was found.
func (r *DevIDResult) OK() bool { return len(r.Problems) == 0 && !r.KeyMismatch && r.ChainError == nil }

// CheckDevID parses a DER certificate and checks it against the DevID
// spec section 8.1 profile as IssueDevID writes it, the key and the CA.
func CheckDevID(der []byte, opt DevIDCheck) (*DevIDResult, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("not an X.509 certificate: %w", err)
	}
	r := &DevIDResult{Cert: cert, DeviceSerial: cert.Subject.SerialNumber}
	bad := func(f string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(f, a...)) }
	if r.DeviceSerial == "" {
		bad("subject has no serialNumber (IEEE 802.1AR, DevID spec 8.1)")
	} else if opt.DeviceSerial != "" && r.DeviceSerial != opt.DeviceSerial {
		bad("subject serialNumber is %q, want %q", r.DeviceSerial, opt.DeviceSerial)
	}
	types, serials, err := HardwareModuleNames(cert)
	switch {
	case err != nil:
		bad("%v", err)
	case len(types) != 1:
		bad("subjectAltName has %d HardwareModuleName otherNames, want 1 (DevID spec 8.1)", len(types))
	default:
		r.HwSerial = string(serials[0])
		if !types[0].Equal(OIDHwTypeTPM) {
			bad("HardwareModuleName hwType is %v, want tcg-tpm %v", types[0], OIDHwTypeTPM)
		}
		if r.HwSerial != r.DeviceSerial {
			bad("HardwareModuleName hwSerialNum %q differs from the subject serialNumber %q", r.HwSerial, r.DeviceSerial)
		}
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature {
		bad("keyUsage is %#x, want digitalSignature only", cert.KeyUsage)
	}
	for _, p := range devIDPolicyOIDs(opt.Kind) {
		if !slices.ContainsFunc(cert.Policies, p.Equal) {
			bad("certificatePolicies lack %v", p)
		}
	}
	hasAIK := slices.ContainsFunc(cert.UnknownExtKeyUsage, OIDAIKCertificate.Equal)
	if opt.Kind == KindIAK && !hasAIK {
		bad("extendedKeyUsage lacks tcg-kp-AIKCertificate %v", OIDAIKCertificate)
	}
	if !cert.BasicConstraintsValid || cert.IsCA {
		bad("basicConstraints must be present with CA:FALSE")
	}
	if len(cert.AuthorityKeyId) == 0 {
		bad("authorityKeyIdentifier missing")
	}
	switch cert.SignatureAlgorithm {
	case x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		bad("signed with RSA-PSS, which Keylime rejects (use PKCS#1 v1.5)")
	}
	if opt.Want != nil && !samePublicKey(cert.PublicKey, opt.Want) {
		r.KeyMismatch = true
	}
	if opt.Roots != nil {
		r.ChainError = verifyChain(cert, CheckOptions{Roots: opt.Roots, Intermediates: opt.Intermediates, Now: opt.Now})
	}
	return r, nil
}
