package ekcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Platform certificates: the TCG Platform Certificate Profile (version
// 1.1, revision 19; "platform profile" below, section 3, the certificate
// fields) defines them as RFC 5755 attribute certificates whose holder is
// the TPM's EK certificate (baseCertificateID: its issuer and serial),
// carrying the TCG platform specification and credential type attributes
// and the platform's manufacturer, model, version and serial as a
// directoryName in the subjectAltName extension.

// OIDs of the platform profile.
var (
	OIDPlatformSpecification   = asn1.ObjectIdentifier{2, 23, 133, 2, 17} // tcg-at-tcgPlatformSpecification
	OIDCredentialSpecification = asn1.ObjectIdentifier{2, 23, 133, 2, 23} // tcg-at-tcgCredentialSpecification
	OIDCredentialType          = asn1.ObjectIdentifier{2, 23, 133, 2, 25} // tcg-at-tcgCredentialType
	OIDPlatformAttrCert        = asn1.ObjectIdentifier{2, 23, 133, 8, 2}  // tcg-kp-PlatformAttributeCertificate
	OIDPlatformManufacturerStr = asn1.ObjectIdentifier{2, 23, 133, 5, 1, 1}
	OIDPlatformModel           = asn1.ObjectIdentifier{2, 23, 133, 5, 1, 4}
	OIDPlatformVersion         = asn1.ObjectIdentifier{2, 23, 133, 5, 1, 5}
	OIDPlatformSerial          = asn1.ObjectIdentifier{2, 23, 133, 5, 1, 6}

	oidAuthorityKeyID     = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCertificatePolicy  = asn1.ObjectIdentifier{2, 5, 29, 32}
	oidAnyPolicy          = asn1.ObjectIdentifier{2, 5, 29, 32, 0}
	oidUserNotice         = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 2, 2}
	oidSHA256WithRSA      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidECDSAWithSHA256    = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384    = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512    = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	platformPolicyNotice  = "TCG Trusted Platform Endorsement" // the userNotice the platform profile's certificatePolicies carry
	platformCredentialVer = [3]int64{1, 1, 19}                 // this profile: version 1.1 revision 19
)

// PlatformRequest describes a platform certificate to issue.
type PlatformRequest struct {
	Holder       *x509.Certificate // the EK certificate the platform's TPM holds
	Manufacturer string
	Model        string
	Version      string
	Serial       string
	// Platform specification the platform follows (TCGPlatformSpecification):
	// version and the 4-byte platformClass of the TCG registry.
	SpecMajor, SpecMinor, SpecRevision int64
	PlatformClass                      [4]byte
	NotBefore, NotAfter                time.Time
}

// addName adds a directoryName GeneralName: [4] EXPLICIT Name.
func addName(b *cryptobyte.Builder, rawName []byte) {
	b.AddASN1(cbasn1.Tag(4).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { b.AddBytes(rawName) })
}

func addIssuerSerial(b *cryptobyte.Builder, rawIssuer []byte, serial *big.Int) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addName(b, rawIssuer) }) // GeneralNames
	b.AddASN1BigInt(serial)
}

func addSpecVersion(b *cryptobyte.Builder, v [3]int64) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, n := range v {
			b.AddASN1Int64(n)
		}
	})
}

func platformSigAlg(pub crypto.PublicKey) (asn1.ObjectIdentifier, crypto.Hash, bool, error) {
	alg, err := signatureAlgorithm(pub)
	if err != nil {
		return nil, 0, false, err
	}
	switch alg {
	case x509.SHA256WithRSA:
		return oidSHA256WithRSA, crypto.SHA256, true, nil
	case x509.ECDSAWithSHA256:
		return oidECDSAWithSHA256, crypto.SHA256, false, nil
	case x509.ECDSAWithSHA384:
		return oidECDSAWithSHA384, crypto.SHA384, false, nil
	case x509.ECDSAWithSHA512:
		return oidECDSAWithSHA512, crypto.SHA512, false, nil
	}
	return nil, 0, false, fmt.Errorf("unsupported CA signature algorithm %v", alg)
}

func addAlgID(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, rsaNull bool) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if rsaNull {
			b.AddASN1NULL()
		}
	})
}

func addUTF8(b *cryptobyte.Builder, s string) {
	b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
}

// IssuePlatform creates a TCG platform certificate (an RFC 5755 version 2
// attribute certificate) signed by the CA and returns its DER.
func IssuePlatform(ca *CA, req PlatformRequest) ([]byte, error) {
	if req.Holder == nil {
		return nil, errors.New("platform certificate: no EK certificate to hold it")
	}
	for f, v := range map[string]string{"manufacturer": req.Manufacturer, "model": req.Model, "version": req.Version, "serial": req.Serial} {
		if v == "" || len(v) > 256 {
			return nil, fmt.Errorf("platform certificate: platform %s must be 1 to 256 bytes (STRMAX)", f)
		}
	}
	sigOID, hash, rsaNull, err := platformSigAlg(ca.Signer.Public())
	if err != nil {
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
	aki := ca.Cert.SubjectKeyId
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // AttributeCertificateInfo
		b.AddASN1Int64(1) // v2
		// holder: baseCertificateID [0] IMPLICIT IssuerSerial of the EK certificate
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				addIssuerSerial(b, req.Holder.RawIssuer, req.Holder.SerialNumber)
			})
		})
		// issuer: v2Form [0] IMPLICIT V2Form { issuerName GeneralNames }
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addName(b, ca.Cert.RawSubject) })
		})
		addAlgID(b, sigOID, rsaNull)
		b.AddASN1BigInt(serial)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1GeneralizedTime(notBefore.UTC())
			b.AddASN1GeneralizedTime(notAfter.UTC())
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // attributes
			attr := func(oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oid)
					b.AddASN1(cbasn1.SET, value)
				})
			}
			attr(OIDCredentialType, func(b *cryptobyte.Builder) { // TCGCredentialType
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(OIDPlatformAttrCert) })
			})
			attr(OIDCredentialSpecification, func(b *cryptobyte.Builder) { addSpecVersion(b, platformCredentialVer) })
			attr(OIDPlatformSpecification, func(b *cryptobyte.Builder) { // TCGPlatformSpecification
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					addSpecVersion(b, [3]int64{req.SpecMajor, req.SpecMinor, req.SpecRevision})
					b.AddASN1OctetString(req.PlatformClass[:])
				})
			})
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // extensions
			ext := func(oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oid)
					b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) { b.AddASN1(cbasn1.SEQUENCE, value) })
				})
			}
			// certificatePolicies with the userNotice the profile asks for.
			ext(oidCertificatePolicy, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidAnyPolicy)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(oidUserNotice)
							b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addUTF8(b, platformPolicyNotice) })
						})
					})
				})
			})
			// subjectAltName: directoryName with the platform attributes,
			// one RDN each.
			ext(oidSubjectAltName, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(4).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						for _, a := range []struct {
							oid asn1.ObjectIdentifier
							v   string
						}{{OIDPlatformManufacturerStr, req.Manufacturer}, {OIDPlatformModel, req.Model}, {OIDPlatformVersion, req.Version}, {OIDPlatformSerial, req.Serial}} {
							b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
								b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
									b.AddASN1ObjectIdentifier(a.oid)
									addUTF8(b, a.v)
								})
							})
						}
					})
				})
			})
			if len(aki) > 0 {
				ext(oidAuthorityKeyID, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(aki) })
				})
			}
		})
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	h := hash.New()
	h.Write(tbs)
	sig, err := ca.Signer.Sign(rand.Reader, h.Sum(nil), hash)
	if err != nil {
		return nil, fmt.Errorf("signing the platform certificate: %w", err)
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		addAlgID(b, sigOID, rsaNull)
		b.AddASN1BitString(sig)
	})
	return out.Bytes()
}

// Platform is a parsed platform certificate.
type Platform struct {
	HolderIssuer pkix.RDNSequence
	HolderSerial *big.Int
	Issuer       pkix.RDNSequence
	Serial       *big.Int
	NotBefore    time.Time
	NotAfter     time.Time
	Manufacturer string
	Model        string
	Version      string
	PlatformSer  string
	CredType     asn1.ObjectIdentifier
	SpecVersion  [3]int64
	Class        []byte
	tbs, sig     []byte
	sigAlg       asn1.ObjectIdentifier
}

var errMalformed = errors.New("malformed platform certificate")

func readDirName(s *cryptobyte.String) (pkix.RDNSequence, error) {
	var gns, name cryptobyte.String
	if !s.ReadASN1(&gns, cbasn1.SEQUENCE) || !gns.ReadASN1Element(&name, cbasn1.Tag(4).ContextSpecific().Constructed()) {
		return nil, errMalformed
	}
	var inner cryptobyte.String
	if !name.ReadASN1(&inner, cbasn1.Tag(4).ContextSpecific().Constructed()) {
		return nil, errMalformed
	}
	var rdn pkix.RDNSequence
	if rest, err := asn1.Unmarshal(inner, &rdn); err != nil || len(rest) != 0 {
		return nil, errMalformed
	}
	return rdn, nil
}

// ParsePlatform parses the DER of a platform certificate as IssuePlatform
// writes it (RFC 5755 AttributeCertificate).
func ParsePlatform(der []byte) (*Platform, error) {
	in := cryptobyte.String(der)
	var ac, info, algID cryptobyte.String
	p := &Platform{}
	if !in.ReadASN1(&ac, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errMalformed
	}
	var tbsEl cryptobyte.String
	if !ac.ReadASN1Element(&tbsEl, cbasn1.SEQUENCE) || !ac.ReadASN1(&algID, cbasn1.SEQUENCE) || !algID.ReadASN1ObjectIdentifier(&p.sigAlg) {
		return nil, errMalformed
	}
	var bits []byte
	if !ac.ReadASN1BitStringAsBytes(&bits) {
		return nil, errMalformed
	}
	p.tbs, p.sig = tbsEl, bits
	info = tbsEl
	if !info.ReadASN1(&info, cbasn1.SEQUENCE) {
		return nil, errMalformed
	}
	var version int64
	var holder, base, issuer, v2, validity, attrs cryptobyte.String
	if !info.ReadASN1Int64WithTag(&version, cbasn1.INTEGER) || version != 1 {
		return nil, errors.New("platform certificate: not an RFC 5755 v2 attribute certificate")
	}
	if !info.ReadASN1(&holder, cbasn1.SEQUENCE) || !holder.ReadASN1(&base, cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return nil, errors.New("platform certificate: holder has no baseCertificateID")
	}
	var err error
	if p.HolderIssuer, err = readDirName(&base); err != nil {
		return nil, err
	}
	p.HolderSerial = new(big.Int)
	if !base.ReadASN1Integer(p.HolderSerial) {
		return nil, errMalformed
	}
	if !info.ReadASN1(&issuer, cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return nil, errors.New("platform certificate: issuer is not in v2Form")
	}
	v2 = issuer
	if p.Issuer, err = readDirName(&v2); err != nil {
		return nil, err
	}
	var skip cryptobyte.String
	p.Serial = new(big.Int)
	if !info.ReadASN1(&skip, cbasn1.SEQUENCE) || !info.ReadASN1Integer(p.Serial) || !info.ReadASN1(&validity, cbasn1.SEQUENCE) ||
		!validity.ReadASN1GeneralizedTime(&p.NotBefore) || !validity.ReadASN1GeneralizedTime(&p.NotAfter) || !info.ReadASN1(&attrs, cbasn1.SEQUENCE) {
		return nil, errMalformed
	}
	for !attrs.Empty() {
		var a, vals cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !attrs.ReadASN1(&a, cbasn1.SEQUENCE) || !a.ReadASN1ObjectIdentifier(&oid) || !a.ReadASN1(&vals, cbasn1.SET) {
			return nil, errMalformed
		}
		var v cryptobyte.String
		switch {
		case oid.Equal(OIDCredentialType):
			if !vals.ReadASN1(&v, cbasn1.SEQUENCE) || !v.ReadASN1ObjectIdentifier(&p.CredType) {
				return nil, errMalformed
			}
		case oid.Equal(OIDPlatformSpecification):
			var ver cryptobyte.String
			if !vals.ReadASN1(&v, cbasn1.SEQUENCE) || !v.ReadASN1(&ver, cbasn1.SEQUENCE) ||
				!ver.ReadASN1Int64WithTag(&p.SpecVersion[0], cbasn1.INTEGER) || !ver.ReadASN1Int64WithTag(&p.SpecVersion[1], cbasn1.INTEGER) ||
				!ver.ReadASN1Int64WithTag(&p.SpecVersion[2], cbasn1.INTEGER) || !v.ReadASN1Bytes(&p.Class, cbasn1.OCTET_STRING) {
				return nil, errMalformed
			}
		}
	}
	var exts cryptobyte.String
	if info.PeekASN1Tag(cbasn1.SEQUENCE) && info.ReadASN1(&exts, cbasn1.SEQUENCE) {
		for !exts.Empty() {
			var e, val cryptobyte.String
			var oid asn1.ObjectIdentifier
			crit := false
			if !exts.ReadASN1(&e, cbasn1.SEQUENCE) || !e.ReadASN1ObjectIdentifier(&oid) ||
				(e.PeekASN1Tag(cbasn1.BOOLEAN) && !e.ReadASN1Boolean(&crit)) || !e.ReadASN1(&val, cbasn1.OCTET_STRING) {
				return nil, errMalformed
			}
			if !oid.Equal(oidSubjectAltName) {
				continue
			}
			rdn, err := readDirName(&val)
			if err != nil {
				return nil, err
			}
			for _, set := range rdn {
				for _, atv := range set {
					s, _ := atv.Value.(string)
					switch {
					case atv.Type.Equal(OIDPlatformManufacturerStr):
						p.Manufacturer = s
					case atv.Type.Equal(OIDPlatformModel):
						p.Model = s
					case atv.Type.Equal(OIDPlatformVersion):
						p.Version = s
					case atv.Type.Equal(OIDPlatformSerial):
						p.PlatformSer = s
					}
				}
			}
		}
	}
	return p, nil
}

// CheckSignature verifies the platform certificate's signature with a CA
// certificate's key.
func (p *Platform) CheckSignature(ca *x509.Certificate) error {
	var hash crypto.Hash
	switch {
	case p.sigAlg.Equal(oidSHA256WithRSA), p.sigAlg.Equal(oidECDSAWithSHA256):
		hash = crypto.SHA256
	case p.sigAlg.Equal(oidECDSAWithSHA384):
		hash = crypto.SHA384
	case p.sigAlg.Equal(oidECDSAWithSHA512):
		hash = crypto.SHA512
	default:
		return fmt.Errorf("platform certificate: signature algorithm %v not supported", p.sigAlg)
	}
	h := hash.New()
	h.Write(p.tbs)
	d := h.Sum(nil)
	switch k := ca.PublicKey.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, hash, d, p.sig)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, d, p.sig) {
			return errors.New("platform certificate: ECDSA signature does not verify with the CA's key")
		}
		return nil
	}
	return fmt.Errorf("platform certificate: CA key type %T", ca.PublicKey)
}

// Holds reports whether the platform certificate's holder is cert.
func (p *Platform) Holds(cert *x509.Certificate) bool {
	var rdn pkix.RDNSequence
	if _, err := asn1.Unmarshal(cert.RawIssuer, &rdn); err != nil {
		return false
	}
	a, _ := asn1.Marshal(rdn)
	b, _ := asn1.Marshal(p.HolderIssuer)
	return string(a) == string(b) && p.HolderSerial.Cmp(cert.SerialNumber) == 0
}
