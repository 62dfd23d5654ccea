package pipeline

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// Device identity keys (TCG "TPM 2.0 Keys for Device Identity and
// Attestation", the DevID spec): where they and their certificates live.
// These are the handles and indices swtpm uses and rust-keylime's
// documentation names; the certificate indices lie in the TCG range for
// platform-written certificates, next to the EK certificate indices
// (0x01C0xxxx), and are defined the same way.
const (
	IDevIDHandle    = 0x81020000
	IAKHandle       = 0x81020001
	IAKCertIndex    = 0x01C90100
	IDevIDCertIndex = 0x01C90200
)

// DevIDSpec says which device identity keys a TPM gets.
type DevIDSpec struct {
	IAK          ek.Alg // "": none
	IDevID       ek.Alg // "": none
	DeviceSerial string
	// Platform asks for a platform certificate (holder: the RSA EK
	// certificate) naming the device serial.
	Platform *PlatformInfo
}

// Any reports whether a key or the platform certificate is requested.
func (d DevIDSpec) Any() bool { return d.IAK != "" || d.IDevID != "" || d.Platform != nil }

// DeviceIdentity is what ManufactureWithDevID made.
type DeviceIdentity struct {
	Keys     []DevIDKey
	Platform []byte // DER of the platform certificate, nil: none
}

// DevIDKey is a manufactured device identity key with its certificate.
type DevIDKey struct {
	Kind   ek.DevIDKind
	Alg    ek.Alg
	Key    *ek.Key
	Handle uint32
	Index  uint32
	Cert   *x509.Certificate
}

// DevIDHandle and DevIDIndex return where a kind of key and its
// certificate are stored.
func DevIDHandle(kind ek.DevIDKind) uint32 {
	if kind == ek.IAK {
		return IAKHandle
	}
	return IDevIDHandle
}

func DevIDIndex(kind ek.DevIDKind) uint32 {
	if kind == ek.IAK {
		return IAKCertIndex
	}
	return IDevIDCertIndex
}

func certKind(kind ek.DevIDKind) ekcert.DevIDKind {
	if kind == ek.IAK {
		return ekcert.KindIAK
	}
	return ekcert.KindIDevID
}

// KindName is how reports name a kind of key.
func KindName(kind ek.DevIDKind) string { return certKind(kind).String() }

// CheckDevID refuses a device identity key type the profile's TPM build
// cannot create, from its algorithm switches.
func CheckDevID(p *nv.Profile, kind ek.DevIDKind, alg ek.Alg) error {
	needs := ek.DevIDNeeds(alg)
	if needs == nil {
		_, err := ek.ParseDevIDAlg(string(alg))
		return err
	}
	for _, sw := range needs {
		if !p.Switches[sw] {
			return fmt.Errorf("%s %s cannot be created by the %s TPM build: it has no %s (%s = 0)", KindName(kind), alg, p.Name, strings.TrimPrefix(strings.TrimPrefix(sw, "ALG_"), "ECC_"), sw)
		}
	}
	return nil
}

// DeriveDevID derives the IAK or IDevID the image's TPM creates with
// TPM2_CreatePrimary in the endorsement hierarchy.
func DeriveDevID(im *nv.Image, kind ek.DevIDKind, alg ek.Alg) (*ek.Key, error) {
	if err := CheckDevID(im.Profile, kind, alg); err != nil {
		return nil, err
	}
	return fromSeed(im, "EPSeed", func(eps []byte, mode ek.CandidateMode) (*ek.Key, error) {
		return ek.DeriveDevID(eps, kind, alg, mode)
	})
}

// PersistDevID makes a derived device identity key persistent at its
// handle, as TPM2_CreatePrimary then TPM2_EvictControl leave it. The
// sensitive area's seedValue is empty: CryptCreateObject clears it for
// every asymmetric key that is not a restricted decryption key (both
// keys sign).
func PersistDevID(im *nv.Image, kind ek.DevIDKind, k *ek.Key) (uint32, error) {
	h := DevIDHandle(kind)
	o, err := objectSpec(k, h, nv.RHEndorsement, nil)
	if err != nil {
		return 0, err
	}
	return h, im.AddPersistent(o)
}

// InstallDevIDs derives, persists and certifies the requested device
// identity keys of an image, and stores each certificate in its index
// (defined like the EK certificate indices, write-locked unless
// o.NoLock). The IAK comes first.
func InstallDevIDs(im *nv.Image, d DevIDSpec, o CertOptions) ([]DevIDKey, error) {
	if !d.Any() {
		return nil, nil
	}
	if err := ekcert.CheckDeviceSerial(d.DeviceSerial); err != nil {
		return nil, err
	}
	var out []DevIDKey
	for _, c := range []struct {
		kind ek.DevIDKind
		alg  ek.Alg
	}{{ek.IAK, d.IAK}, {ek.IDevID, d.IDevID}} {
		if c.alg == "" {
			continue
		}
		k, err := DeriveDevID(im, c.kind, c.alg)
		if err != nil {
			return nil, err
		}
		pub, err := k.CryptoPublic()
		if err != nil {
			return nil, err
		}
		cert, err := ekcert.IssueDevID(o.CA, ekcert.DevIDRequest{Kind: certKind(c.kind), PublicKey: pub, DeviceSerial: d.DeviceSerial,
			NotBefore: o.NotBefore, NotAfter: o.NotAfter})
		if err != nil {
			return nil, err
		}
		res, err := ekcert.CheckDevID(cert.Raw, ekcert.DevIDCheck{Kind: certKind(c.kind), Want: pub, DeviceSerial: d.DeviceSerial,
			Roots: roots(o.CA), Intermediates: o.CA.Chain})
		if err != nil {
			return nil, err
		}
		if !res.OK() {
			return nil, fmt.Errorf("issued %s certificate fails its own check: %v %v", KindName(c.kind), res.Problems, res.ChainError)
		}
		h, err := PersistDevID(im, c.kind, k)
		if err != nil {
			return nil, err
		}
		if err := putIndex(im, DevIDIndex(c.kind), cert.Raw, !o.NoLock); err != nil {
			return nil, fmt.Errorf("%s certificate: %w", KindName(c.kind), err)
		}
		out = append(out, DevIDKey{Kind: c.kind, Alg: c.alg, Key: k, Handle: h, Index: DevIDIndex(c.kind), Cert: cert})
	}
	return out, nil
}

// ManufactureWithDevID is Manufacture plus the device identity keys and
// platform certificate of o.DevID, which come after the EKs and their
// persistent copies.
func ManufactureWithDevID(o ManufactureOptions) (*nv.Image, []Issued, *DeviceIdentity, error) {
	d := o.DevID
	o.DevID = DevIDSpec{}
	im, issued, err := Manufacture(o)
	if err != nil {
		return nil, nil, nil, err
	}
	id := &DeviceIdentity{}
	if id.Keys, err = InstallDevIDs(im, d, o.CertOptions); err != nil {
		return nil, nil, nil, err
	}
	if d.Platform != nil {
		if id.Platform, err = installPlatform(im, d, o.CertOptions); err != nil {
			return nil, nil, nil, err
		}
	}
	return im, issued, id, nil
}

// ManifestDevID describes a device identity key and its certificate.
type ManifestDevID struct {
	Kind         string `json:"kind"`
	Alg          string `json:"alg"`
	Handle       string `json:"handle"`
	Index        string `json:"nv_index"`
	Name         string `json:"name"`
	KeySHA256    string `json:"public_key_fingerprint"`
	DeviceSerial string `json:"device_serial"`
	Serial       string `json:"certificate_serial"`
	CertSHA256   string `json:"certificate_sha256"`
	Issuer       string `json:"issuer"`
	NotAfter     string `json:"not_after"`
	CertFile     string `json:"certificate_file,omitempty"`
	PubFile      string `json:"public_key_file,omitempty"`
}

// DevIDCertDirFiles are the certificate and public key files of a device
// identity key in a certificate directory.
func DevIDCertDirFiles(dir string, kind ek.DevIDKind) [2]string {
	return [2]string{filepath.Join(dir, string(kind)+".crt.pem"), filepath.Join(dir, string(kind)+".pub.pem")}
}

func (j *Job) checkDevIDOutputs() error {
	if j.DevID.Platform != nil {
		if err := atomicfile.Check(PlatformCertFile(j.CertDir), j.Force); err != nil {
			return err
		}
	}
	for _, c := range []struct {
		kind ek.DevIDKind
		alg  ek.Alg
	}{{ek.IAK, j.DevID.IAK}, {ek.IDevID, j.DevID.IDevID}} {
		if c.alg == "" {
			continue
		}
		for _, f := range DevIDCertDirFiles(j.CertDir, c.kind) {
			if err := atomicfile.Check(f, j.Force); err != nil {
				return err
			}
		}
	}
	return nil
}

// addDevIDs describes the device identity keys and the platform
// certificate, and adds their files to the batch when there is a
// certificate directory.
func (j *Job) addDevIDs(b *atomicfile.Batch, id *DeviceIdentity, m *Manifest) error {
	if id.Platform != nil {
		mp, err := manifestPlatform(id.Platform)
		if err != nil {
			return err
		}
		add := func(path string, data []byte) error {
			return b.Add(path, 0o644, j.Force, func(f *os.File) error { _, err := f.Write(data); return err })
		}
		if err := writePlatformFile(j, add, id.Platform, mp); err != nil {
			return err
		}
		m.Platform = mp
	}
	var err error
	m.DevIDs, err = j.addDevIDKeys(b, id.Keys)
	return err
}

func (j *Job) addDevIDKeys(b *atomicfile.Batch, devids []DevIDKey) ([]ManifestDevID, error) {
	var out []ManifestDevID
	for _, d := range devids {
		pub, err := d.Key.CryptoPublic()
		if err != nil {
			return nil, err
		}
		m := ManifestDevID{Kind: string(d.Kind), Alg: string(d.Alg), Handle: fmt.Sprintf("0x%08x", d.Handle), Index: fmt.Sprintf("0x%08x", d.Index),
			Name: fmt.Sprintf("%x", d.Key.Name), KeySHA256: KeyFingerprint(pub), DeviceSerial: d.Cert.Subject.SerialNumber,
			Serial: d.Cert.SerialNumber.Text(16), CertSHA256: hexSHA256(d.Cert.Raw), Issuer: d.Cert.Issuer.String(),
			NotAfter: d.Cert.NotAfter.UTC().Format(time.RFC3339)}
		if j.CertDir != "" {
			der, err := x509.MarshalPKIXPublicKey(pub)
			if err != nil {
				return nil, err
			}
			files := DevIDCertDirFiles(j.CertDir, d.Kind)
			for i, data := range [][]byte{ekcert.EncodeCert(d.Cert), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})} {
				if err := b.Add(files[i], 0o644, j.Force, func(f *os.File) error { _, err := f.Write(data); return err }); err != nil {
					return nil, err
				}
			}
			m.CertFile, m.PubFile = files[0], files[1]
		}
		out = append(out, m)
	}
	return out, nil
}

// DevIDReport is one device identity key of an image: the key at its
// handle and the certificate in its index, whichever are present, and the
// key the TPM derives for the template of their type.
type DevIDReport struct {
	Kind         string `json:"kind"`
	Alg          string `json:"alg"`
	Handle       string `json:"handle"`
	Persisted    bool   `json:"persisted"`
	CertIndex    string `json:"certificate_index"`
	Certified    bool   `json:"certified"`
	DeviceSerial string `json:"device_serial,omitempty"`
	Name         string `json:"name,omitempty"`
	KeySHA256    string `json:"public_key_fingerprint,omitempty"`
	// Matches: the persisted key and the certificate's key are the key
	// derived from the EPS for the template.
	Matches bool   `json:"matches_derived_key"`
	Error   string `json:"error,omitempty"`
}

// devIDAlgOf names the device identity key type of a public key.
func devIDAlgOf(pub crypto.PublicKey) (ek.Alg, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return ek.RSA2048, nil
		case 3072:
			return ek.RSA3072, nil
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ek.ECCP256, nil
		case elliptic.P384():
			return ek.ECCP384, nil
		}
	}
	return "", fmt.Errorf("a %T key of a type no device identity template has", pub)
}

// devIDState is what an image holds for one kind of device identity key.
type devIDState struct {
	kind      ek.DevIDKind
	persisted *tpm2.TPMTPublic
	cert      *x509.Certificate
	certDER   []byte
	alg       ek.Alg
	derived   *ek.Key
	err       error
}

func devIDStates(im *nv.Image) []devIDState {
	var out []devIDState
	for _, kind := range []ek.DevIDKind{ek.IAK, ek.IDevID} {
		s := devIDState{kind: kind}
		if i := im.Find(DevIDHandle(kind)); i >= 0 && im.Entries[i].Index == nil {
			pub, _, err := nv.ObjectPublic(im.Entries[i])
			if err != nil {
				s.err = err
			} else {
				s.persisted = &pub
			}
		}
		if ix := im.LookupIndex(DevIDIndex(kind)); ix != nil {
			s.certDER = ix.Data
			if c, err := x509.ParseCertificate(ix.Data); err == nil {
				s.cert = c
			} else if s.err == nil {
				s.err = fmt.Errorf("NV index 0x%08x: not a certificate: %v", DevIDIndex(kind), err)
			}
		}
		if s.persisted == nil && s.certDER == nil && s.err == nil {
			continue
		}
		var pub crypto.PublicKey
		var err error
		switch {
		case s.persisted != nil:
			pub, err = tpm2.Pub(*s.persisted)
		case s.cert != nil:
			pub = s.cert.PublicKey
		}
		if s.err == nil && err != nil {
			s.err = err
		}
		if s.err == nil && pub != nil {
			if s.alg, err = devIDAlgOf(pub); err != nil {
				s.err = err
			} else if s.derived, err = DeriveDevID(im, kind, s.alg); err != nil {
				s.err = err
			}
		}
		out = append(out, s)
	}
	return out
}

func describeDevIDs(im *nv.Image) []DevIDReport {
	var out []DevIDReport
	for _, s := range devIDStates(im) {
		r := DevIDReport{Kind: string(s.kind), Alg: string(s.alg), Handle: fmt.Sprintf("0x%08x", DevIDHandle(s.kind)),
			Persisted: s.persisted != nil, CertIndex: fmt.Sprintf("0x%08x", DevIDIndex(s.kind)), Certified: s.cert != nil}
		if s.err != nil {
			r.Error = s.err.Error()
		}
		if s.cert != nil {
			r.DeviceSerial = s.cert.Subject.SerialNumber
		}
		if s.derived != nil {
			r.Name = fmt.Sprintf("%x", s.derived.Name)
			pub, _ := s.derived.CryptoPublic()
			r.KeySHA256 = KeyFingerprint(pub)
			r.Matches = (s.persisted == nil || bytes.Equal(tpm2.Marshal(*s.persisted), tpm2.Marshal(s.derived.Public))) &&
				(s.cert == nil || KeyFingerprint(s.cert.PublicKey) == r.KeySHA256)
		}
		out = append(out, r)
	}
	return out
}

func devIDText(b *strings.Builder, ds []DevIDReport) {
	if len(ds) == 0 {
		return
	}
	b.WriteString("device identity keys (TCG DevID, derived from the EPS):\n")
	for _, d := range ds {
		name := KindName(ek.DevIDKind(d.Kind))
		if d.Error != "" {
			fmt.Fprintf(b, "  %-6s %s\n", name, d.Error)
			continue
		}
		where := []string{}
		if d.Persisted {
			where = append(where, "persistent at "+d.Handle)
		}
		if d.Certified {
			where = append(where, fmt.Sprintf("certified at %s for serialNumber=%s", d.CertIndex, d.DeviceSerial))
		}
		match := "matches the derived key"
		if !d.Matches {
			match = "does NOT match the derived key"
		}
		fmt.Fprintf(b, "  %-6s %-9s %s  name %s  (%s; %s)\n", name, d.Alg, d.KeySHA256, d.Name, strings.Join(where, ", "), match)
	}
}

// verifyDevIDs checks every device identity key an image holds (and
// those o.DevID requires): the persisted key is the derived one, the
// certificate certifies it, meets the DevID profile, chains to the CA and
// names the device serial; its index is defined like an EK certificate's.
func verifyDevIDs(im *nv.Image, o VerifyOptions, inter []*x509.Certificate) []string {
	var f []string
	states := devIDStates(im)
	for _, c := range []struct {
		kind ek.DevIDKind
		alg  ek.Alg
	}{{ek.IAK, o.DevID.IAK}, {ek.IDevID, o.DevID.IDevID}} {
		if c.alg == "" {
			continue
		}
		found := false
		for _, s := range states {
			if s.kind == c.kind {
				found = true
				if s.alg != "" && s.alg != c.alg {
					f = append(f, fmt.Sprintf("%s: is %s, want %s", KindName(c.kind), s.alg, c.alg))
				}
			}
		}
		if !found {
			f = append(f, fmt.Sprintf("%s: none (no key at 0x%08x, no certificate at NV index 0x%08x)", KindName(c.kind), DevIDHandle(c.kind), DevIDIndex(c.kind)))
		}
	}
	for _, s := range states {
		name := KindName(s.kind)
		if s.err != nil {
			f = append(f, fmt.Sprintf("%s: %v", name, s.err))
			continue
		}
		if s.persisted == nil {
			f = append(f, fmt.Sprintf("%s: no persistent key at 0x%08x", name, DevIDHandle(s.kind)))
		} else if !bytes.Equal(tpm2.Marshal(*s.persisted), tpm2.Marshal(s.derived.Public)) {
			f = append(f, fmt.Sprintf("%s: the persistent key at 0x%08x is not the key this TPM derives for the %s template", name, DevIDHandle(s.kind), s.alg))
		}
		if s.cert == nil {
			f = append(f, fmt.Sprintf("%s: no certificate at NV index 0x%08x", name, DevIDIndex(s.kind)))
			continue
		}
		h := DevIDIndex(s.kind)
		ix := im.LookupIndex(h)
		if want := nv.AttrEKCert | nv.AttrWritten; ix.Attributes&^nv.AttrWriteLocked != want {
			f = append(f, fmt.Sprintf("%s: NV index 0x%08x has attributes 0x%08x (%s), want 0x%08x (+ writelocked) as for EK certificates", name, h, ix.Attributes, nv.AttrString(ix.Attributes), want))
		}
		pub, _ := s.derived.CryptoPublic()
		res, err := ekcert.CheckDevID(s.certDER, ekcert.DevIDCheck{Kind: certKind(s.kind), Want: pub, DeviceSerial: o.DevID.DeviceSerial,
			Roots: o.CA, Intermediates: inter, Now: o.Now})
		if err != nil {
			f = append(f, fmt.Sprintf("%s: NV index 0x%08x: %v", name, h, err))
			continue
		}
		f = append(f, certFindings(name, "", res.Problems, res.KeyMismatch, res.Cert, pub, res.ChainError)...)
	}
	return f
}
