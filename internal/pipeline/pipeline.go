// Package pipeline runs vtpm-mfg's jobs end to end: it manufactures NV
// images, derives their EKs, issues and installs EK certificates, and
// verifies and describes images, on top of packages nv, ek, ekcert and
// container. The CLI is a thin layer over it.
package pipeline

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// CertIndex is the NV index of an EK type's certificate (TCG EK
// Credential Profile), 0 for an unknown type.
func CertIndex(alg ek.Alg) uint32 {
	if t := ek.EKOf(alg); t != nil {
		return t.Index
	}
	return 0
}

// CheckEK refuses an EK type the profile's TPM build cannot create, with
// the reason taken from the profile's algorithm switches.
func CheckEK(p *nv.Profile, alg ek.Alg) error {
	t := ek.EKOf(alg)
	if t == nil {
		return fmt.Errorf("unknown EK type %q", alg)
	}
	for _, sw := range t.Needs {
		if !p.Switches[sw] {
			return fmt.Errorf("%s (%s) cannot be created by the %s TPM build: it has no %s (%s = 0), so TPM2_CreatePrimary refuses the template", t.ID, t.What, p.Name, strings.TrimPrefix(strings.TrimPrefix(sw, "ALG_"), "ECC_"), sw)
		}
	}
	if _, ok := t.Template(); !ok {
		return fmt.Errorf("%s (%s) is not supported by this tool", t.ID, t.What)
	}
	return nil
}

// ChainIndexFirst is the first NV index of the EK certificate chain.
const ChainIndexFirst = 0x01C00100

// ChainIndexLast is the last NV index of the EK certificate chain range.
const ChainIndexLast = 0x01C001FF

// TPMInfo returns the properties a profile's TPM reports.
func TPMInfo(p *nv.Profile) ekcert.TPMInfo {
	return ekcert.TPMInfo{
		Manufacturer: p.Manufacturer, Model: p.VendorString, FirmwareV1: p.FirmwareV1,
		SpecFamily: p.SpecFamily, SpecLevel: p.SpecLevel, SpecRevision: p.SpecRevision,
	}
}

// DeriveEK derives the EK the image's TPM will create.
func DeriveEK(im *nv.Image, alg ek.Alg) (*ek.Key, error) {
	if err := CheckEK(im.Profile, alg); err != nil {
		return nil, err
	}
	return fromSeed(im, "EPSeed", func(eps []byte, mode ek.CandidateMode) (*ek.Key, error) {
		return ek.Derive(eps, alg, mode, nil)
	})
}

// fromSeed calls derive with a copy of one of the image's primary seeds
// (wiped afterwards) and the RSA candidate mode of its TPM build, as every
// derivation of a primary key needs them.
func fromSeed[T any](im *nv.Image, seed string, derive func(seed []byte, mode ek.CandidateMode) (T, error)) (T, error) {
	mode, err := ek.ModeByName(im.Profile.RSACandidate)
	if err != nil {
		var zero T
		return zero, err
	}
	s := append([]byte(nil), im.TPM2B(seed)...)
	defer clear(s)
	return derive(s, mode)
}

// DerivePublic derives the EK and returns it with its crypto.PublicKey.
func DerivePublic(im *nv.Image, alg ek.Alg) (*ek.Key, crypto.PublicKey, error) {
	k, err := DeriveEK(im, alg)
	if err != nil {
		return nil, nil, err
	}
	pub, err := k.CryptoPublic()
	if err != nil {
		return nil, nil, err
	}
	return k, pub, nil
}

// KeyFingerprint is the SHA-256 of a public key's SubjectPublicKeyInfo.
func KeyFingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(s[:])
}

// ParseNV parses an NVChip, for the named profile or whichever fits.
func ParseNV(name string, data []byte, profile string) (*nv.Image, error) {
	if profile != "" {
		p, err := nv.Get(profile)
		if err != nil {
			return nil, err
		}
		im, err := nv.Parse(p, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return im, nil
	}
	im, err := nv.Detect(data)
	if err != nil {
		return nil, fmt.Errorf("%s: fits no known TPM profile:\n%w", name, err)
	}
	return im, nil
}

// ReadNVChip reads and parses a raw NVChip file.
func ReadNVChip(path, profile string) (*nv.Image, error) {
	data, err := ReadNVChipFile(path)
	if err != nil {
		return nil, err
	}
	return ParseNV(path, data, profile)
}

// ReadState opens a state image of any container and parses its NVChip.
func ReadState(path string, key []byte, profile string) (*nv.Image, *ContainerInfo, error) {
	data, info, err := ReadStateNVChip(path, key)
	if err != nil {
		return nil, nil, err
	}
	im, err := ParseNV(path, data, profile)
	return im, info, err
}

// Issued is one EK with its certificate.
type Issued struct {
	Alg   ek.Alg
	Key   *ek.Key
	Cert  *x509.Certificate
	Index uint32
}

// CertOptions control how certificates are issued and stored.
type CertOptions struct {
	CA         *ekcert.CA
	NotBefore  time.Time
	NotAfter   time.Time
	NoLock     bool // leave the index writable (no NV_WriteLock)
	StoreChain bool // also store the CA chain at 0x01C00100..
}

// ManufactureOptions describe a new TPM.
type ManufactureOptions struct {
	Profile *nv.Profile
	Algs    []ek.Alg
	CertOptions
	Persist Persist
	// DevID are the device identity keys (ManufactureWithDevID).
	DevID DevIDSpec
}

// Persist says which keys a manufactured TPM also holds persistently.
type Persist struct {
	EKs []ek.Alg // certified EKs, each at its TCG Provisioning Guidance handle
	SRK bool     // systemd's storage root key at 0x81000001
}

// Manufacture creates a fresh NV image with EK certificates for each
// requested algorithm.
func Manufacture(o ManufactureOptions) (*nv.Image, []Issued, error) {
	if o.DevID.Any() {
		return nil, nil, fmt.Errorf("device identity keys need ManufactureWithDevID")
	}
	im, err := nv.Manufacture(o.Profile)
	if err != nil {
		return nil, nil, err
	}
	var out []Issued
	for _, alg := range o.Algs {
		is, err := IssueAndInstall(im, alg, o.CertOptions)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, *is)
	}
	if o.StoreChain {
		if err := StoreChain(im, o.CA, !o.NoLock); err != nil {
			return nil, nil, err
		}
	}
	for _, alg := range o.Persist.EKs {
		if !slices.Contains(o.Algs, alg) {
			return nil, nil, fmt.Errorf("%s: only a certified EK is persisted; add it to the EKs to certify", alg)
		}
		if _, err := PersistEK(im, alg); err != nil {
			return nil, nil, err
		}
	}
	if o.Persist.SRK {
		if _, err := PersistSRK(im); err != nil {
			return nil, nil, err
		}
	}
	return im, out, nil
}

// IssueAndInstall derives the image's EK, issues a certificate for it and
// stores it in the EK certificate index.
func IssueAndInstall(im *nv.Image, alg ek.Alg, o CertOptions) (*Issued, error) {
	k, pub, err := DerivePublic(im, alg)
	if err != nil {
		return nil, err
	}
	cert, err := ekcert.Issue(o.CA, ekcert.Request{PublicKey: pub, TPM: TPMInfo(im.Profile), NotBefore: o.NotBefore, NotAfter: o.NotAfter})
	if err != nil {
		return nil, err
	}
	res, err := ekcert.Check(cert.Raw, ekcert.CheckOptions{Want: pub, TPM: ptr(TPMInfo(im.Profile)), Roots: roots(o.CA), Intermediates: o.CA.Chain})
	if err != nil {
		return nil, err
	}
	if !res.OK() {
		return nil, fmt.Errorf("issued %s certificate fails its own check: %v %v", alg, res.Problems, res.ChainError)
	}
	if err := PutCert(im, alg, cert.Raw, !o.NoLock); err != nil {
		return nil, err
	}
	return &Issued{Alg: alg, Key: k, Cert: cert, Index: CertIndex(alg)}, nil
}

func ptr[T any](v T) *T { return &v }

// roots returns the trust anchors of a CA: the top of its chain.
func roots(ca *ekcert.CA) []*x509.Certificate {
	if len(ca.Chain) == 0 {
		return []*x509.Certificate{ca.Cert}
	}
	return []*x509.Certificate{ca.Chain[len(ca.Chain)-1]}
}

// PutCert stores DER bytes in alg's certificate index. An existing index is
// replaced (undefined and defined again, as the platform would) keeping its
// attributes; a new one gets the manufacturer attributes.
func PutCert(im *nv.Image, alg ek.Alg, der []byte, lock bool) error {
	h := CertIndex(alg)
	if h == 0 {
		return fmt.Errorf("no certificate index for %s", alg)
	}
	return putIndex(im, h, der, lock)
}

func putIndex(im *nv.Image, h uint32, der []byte, lock bool) error {
	spec := nv.IndexSpec{Handle: h, Attributes: nv.AttrEKCert, Data: der, Lock: lock}
	if old := im.LookupIndex(h); old != nil {
		spec.Attributes = old.Attributes &^ (nv.AttrWritten | nv.AttrWriteLocked)
		spec.NameAlg = old.NameAlg
		spec.AuthPolicy = old.AuthPolicy
		spec.AuthValue = old.AuthValue
		spec.Lock = old.Attributes&nv.AttrWriteLocked != 0 || lock
		if err := im.Delete(h); err != nil {
			return err
		}
	}
	if len(der) > im.Profile.MaxNVIndexSize {
		return fmt.Errorf("certificate is %d bytes; NV indices of this TPM build hold at most %d (MAX_NV_INDEX_SIZE)", len(der), im.Profile.MaxNVIndexSize)
	}
	return im.DefineIndex(spec)
}

// StoreChain writes the issuing CA certificate and its intermediates, one
// DER certificate per index from 0x01C00100 on.
func StoreChain(im *nv.Image, ca *ekcert.CA, lock bool) error {
	certs := append([]*x509.Certificate{ca.Cert}, ca.Chain...)
	for i, c := range certs {
		if err := putIndex(im, ChainIndexFirst+uint32(i), c.Raw, lock); err != nil {
			return fmt.Errorf("storing CA certificate %d (%s): %w", i, c.Subject, err)
		}
	}
	return nil
}
