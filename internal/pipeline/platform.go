package pipeline

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// PlatformCertIndex is the NV index of the platform certificate, in the
// TCG range for platform-written certificates (swtpm stores its platform
// certificate there too).
const PlatformCertIndex = 0x01C08000

// PlatformInfo is what a platform certificate says about the platform;
// empty fields take PlatformDefaults.
type PlatformInfo struct {
	Manufacturer string
	Model        string
	Version      string
}

// PlatformDefaults fills the empty fields with what is true of every VM
// this tool makes: the manufacturer is who vouches for it (the CA's
// organization, else its common name), the model the virtual platform,
// the version the TPM build.
func PlatformDefaults(pi PlatformInfo, ca *ekcert.CA, p *nv.Profile) PlatformInfo {
	if pi.Manufacturer == "" {
		if o := ca.Cert.Subject.Organization; len(o) > 0 && o[0] != "" {
			pi.Manufacturer = o[0]
		} else {
			pi.Manufacturer = ca.Cert.Subject.CommonName
		}
	}
	if pi.Model == "" {
		pi.Model = "COCONUT-SVSM confidential VM (AMD SEV-SNP) with vTPM"
	}
	if pi.Version == "" {
		pi.Version = fmt.Sprintf("vTPM %s (TCG TPM %.7s)", p.Name, p.TCGCommit)
	}
	return pi
}

// installPlatform issues the platform certificate for the image's RSA EK
// certificate (its holder) and stores it at PlatformCertIndex. The
// platform specification is the one the TPM reports (TPM_PT_PS_FAMILY_
// INDICATOR, _LEVEL, _REVISION: 0 in both builds, no platform-specific
// specification; platformClass 0 accordingly).
func installPlatform(im *nv.Image, d DevIDSpec, o CertOptions) ([]byte, error) {
	ix := im.LookupIndex(CertIndex(ek.RSA2048))
	if ix == nil {
		return nil, fmt.Errorf("--platform-cert: the platform certificate's holder is the RSA EK certificate (L-1, NV 0x01C00002); certify the rsa2048 EK too (--ek rsa2048,...)")
	}
	holder, err := x509.ParseCertificate(ix.Data)
	if err != nil {
		return nil, fmt.Errorf("RSA EK certificate: %w", err)
	}
	pi := PlatformDefaults(*d.Platform, o.CA, im.Profile)
	der, err := ekcert.IssuePlatform(o.CA, ekcert.PlatformRequest{Holder: holder, Manufacturer: pi.Manufacturer, Model: pi.Model,
		Version: pi.Version, Serial: d.DeviceSerial, NotBefore: o.NotBefore, NotAfter: o.NotAfter})
	if err != nil {
		return nil, err
	}
	if err := putIndex(im, PlatformCertIndex, der, !o.NoLock); err != nil {
		return nil, fmt.Errorf("platform certificate: %w", err)
	}
	return der, nil
}

// ManifestPlatform describes the platform certificate.
type ManifestPlatform struct {
	Index        string `json:"nv_index"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Version      string `json:"version"`
	Serial       string `json:"platform_serial"`
	HolderSerial string `json:"holder_certificate_serial"`
	CertSHA256   string `json:"certificate_sha256"`
	CertFile     string `json:"certificate_file,omitempty"`
}

// PlatformCertFile is the platform certificate in a certificate directory
// (PEM "ATTRIBUTE CERTIFICATE").
func PlatformCertFile(dir string) string { return filepath.Join(dir, "platform.pem") }

func manifestPlatform(der []byte) (*ManifestPlatform, error) {
	p, err := ekcert.ParsePlatform(der)
	if err != nil {
		return nil, err
	}
	return &ManifestPlatform{Index: fmt.Sprintf("0x%08x", PlatformCertIndex), Manufacturer: p.Manufacturer, Model: p.Model, Version: p.Version,
		Serial: p.PlatformSer, HolderSerial: p.HolderSerial.Text(16), CertSHA256: hexSHA256(der)}, nil
}

func writePlatformFile(j *Job, add func(path string, data []byte) error, der []byte, m *ManifestPlatform) error {
	if j.CertDir == "" {
		return nil
	}
	f := PlatformCertFile(j.CertDir)
	if err := add(f, pem.EncodeToMemory(&pem.Block{Type: "ATTRIBUTE CERTIFICATE", Bytes: der})); err != nil {
		return err
	}
	m.CertFile = f
	return nil
}

// PlatformReport is the platform certificate of an image.
type PlatformReport struct {
	ManifestPlatform
	Issuer string `json:"issuer"`
	Error  string `json:"error,omitempty"`
}

func describePlatform(im *nv.Image) *PlatformReport {
	ix := im.LookupIndex(PlatformCertIndex)
	if ix == nil {
		return nil
	}
	m, err := manifestPlatform(ix.Data)
	if err != nil {
		return &PlatformReport{Error: err.Error()}
	}
	p, _ := ekcert.ParsePlatform(ix.Data)
	return &PlatformReport{ManifestPlatform: *m, Issuer: p.Issuer.String()}
}

// verifyPlatform checks the platform certificate, if present or required:
// it parses, is signed by the CA (or an intermediate), its holder is the
// RSA EK certificate in NV, and it names the device serial.
func verifyPlatform(im *nv.Image, o VerifyOptions, inter []*x509.Certificate) []string {
	ix := im.LookupIndex(PlatformCertIndex)
	if ix == nil {
		if o.DevID.Platform != nil {
			return []string{fmt.Sprintf("platform certificate: none at NV index 0x%08x", PlatformCertIndex)}
		}
		return nil
	}
	var f []string
	p, err := ekcert.ParsePlatform(ix.Data)
	if err != nil {
		return []string{fmt.Sprintf("platform certificate at NV index 0x%08x: %v", PlatformCertIndex, err)}
	}
	if want := nv.AttrEKCert | nv.AttrWritten; ix.Attributes&^nv.AttrWriteLocked != want {
		f = append(f, fmt.Sprintf("platform certificate: NV index 0x%08x has attributes 0x%08x, want 0x%08x (+ writelocked)", PlatformCertIndex, ix.Attributes, want))
	}
	signed := false
	for _, c := range append(append([]*x509.Certificate(nil), o.CA...), inter...) {
		if p.CheckSignature(c) == nil {
			signed = true
		}
	}
	if !signed {
		f = append(f, "platform certificate: not signed by the CA")
	}
	if h := im.LookupIndex(CertIndex(ek.RSA2048)); h == nil {
		f = append(f, "platform certificate: no RSA EK certificate (its holder) at NV index 0x01c00002")
	} else if c, err := x509.ParseCertificate(h.Data); err != nil || !p.Holds(c) {
		f = append(f, "platform certificate: its holder is not the RSA EK certificate at NV index 0x01c00002")
	}
	if !p.CredType.Equal(ekcert.OIDPlatformAttrCert) {
		f = append(f, "platform certificate: tcgCredentialType is not tcg-kp-PlatformAttributeCertificate")
	}
	if o.DevID.DeviceSerial != "" && p.PlatformSer != o.DevID.DeviceSerial {
		f = append(f, fmt.Sprintf("platform certificate: platformSerial is %q, want %q", p.PlatformSer, o.DevID.DeviceSerial))
	}
	return f
}

func platformText(b *strings.Builder, p *PlatformReport) {
	if p == nil {
		return
	}
	if p.Error != "" {
		fmt.Fprintf(b, "platform certificate: %s\n", p.Error)
		return
	}
	fmt.Fprintf(b, "platform certificate (TCG, attribute certificate) at %s:\n  manufacturer %q, model %q, version %q, serial %q\n  holder: EK certificate serial %s; issuer %s\n",
		p.Index, p.Manufacturer, p.Model, p.Version, p.Serial, p.HolderSerial, p.Issuer)
}

// DeviceIdentityIn names the device identity keys and platform
// certificate an image holds (for summaries).
func DeviceIdentityIn(im *nv.Image) []string {
	var out []string
	for _, c := range []struct {
		name   string
		handle uint32
		index  uint32
	}{{"IAK", IAKHandle, IAKCertIndex}, {"IDevID", IDevIDHandle, IDevIDCertIndex}, {"platform certificate", 0, PlatformCertIndex}} {
		if im.LookupIndex(c.index) != nil || (c.handle != 0 && im.Find(c.handle) >= 0) {
			out = append(out, c.name)
		}
	}
	return out
}
