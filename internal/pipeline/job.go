package pipeline

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/container"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// Job is one manufactured TPM written to files.
type Job struct {
	Profile   *nv.Profile
	Algs      []ek.Alg
	Cert      CertOptions
	Container container.Format // nil: write the raw NVChip
	Create    CreateOptions
	Key       []byte
	Output    string
	CertDir   string // "" for none
	Force     bool
	Persist   Persist
	DevID     DevIDSpec
}

// Manifest describes a manufactured TPM (manufacture --json).
type Manifest struct {
	Profile      string            `json:"profile"`
	Output       string            `json:"output"`
	Format       string            `json:"format"`
	Container    string            `json:"container,omitempty"`
	ImageSHA256  string            `json:"image_sha256"`
	NVChipSHA256 string            `json:"nvchip_sha256"`
	EKs          []ManifestCert    `json:"endorsement_keys"`
	Persistent   []string          `json:"persistent_handles,omitempty"`
	DevIDs       []ManifestDevID   `json:"device_identity_keys,omitempty"`
	Platform     *ManifestPlatform `json:"platform_certificate,omitempty"`
	// AttestationManifestSHA512 is the SHA-512 of the vTPM service
	// manifest the SVSM's attestation reports (profiles with attestation).
	AttestationManifestSHA512 string `json:"attestation_manifest_sha512,omitempty"`
}

// ManifestCert describes one EK and its certificate.
type ManifestCert struct {
	Alg        string `json:"alg"`
	Index      string `json:"nv_index"`
	Name       string `json:"ek_name"`
	KeySHA256  string `json:"ek_public_key_fingerprint"`
	Serial     string `json:"certificate_serial"`
	CertSHA256 string `json:"certificate_sha256"`
	Issuer     string `json:"issuer"`
	NotAfter   string `json:"not_after"`
	CertFile   string `json:"certificate_file,omitempty"`
	EKFile     string `json:"ek_public_key_file,omitempty"`
}

// CertDirFiles are the certificate and public key files of an EK.
func CertDirFiles(dir string, alg ek.Alg) [2]string {
	return [2]string{filepath.Join(dir, "ek-"+string(alg)+".crt.pem"), filepath.Join(dir, "ek-"+string(alg)+".pub.pem")}
}

// CheckOutputs fails if an output of the job exists and may not be
// replaced: call it before any work.
func (j *Job) CheckOutputs() error {
	if err := atomicfile.Check(j.Output, j.Force); err != nil {
		return err
	}
	if j.CertDir != "" {
		for _, alg := range j.Algs {
			for _, f := range CertDirFiles(j.CertDir, alg) {
				if err := atomicfile.Check(f, j.Force); err != nil {
					return err
				}
			}
		}
		if err := j.checkDevIDOutputs(); err != nil {
			return err
		}
	}
	return nil
}

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Run manufactures the TPM and writes the image (or NVChip) and the
// certificate files all together, or nothing.
func (j *Job) Run() (*Manifest, error) {
	if err := j.CheckOutputs(); err != nil {
		return nil, err
	}
	im, issued, devids, err := ManufactureWithDevID(ManufactureOptions{Profile: j.Profile, Algs: j.Algs, CertOptions: j.Cert, Persist: j.Persist, DevID: j.DevID})
	if err != nil {
		return nil, err
	}
	nvb := im.Bytes()
	defer clear(nvb)
	var persistent []string
	for _, e := range im.Entries {
		if e.Index == nil {
			persistent = append(persistent, fmt.Sprintf("0x%08x", e.Handle))
		}
	}
	var b atomicfile.Batch
	defer b.Abort()
	m := &Manifest{Profile: j.Profile.Name, Output: j.Output, Format: "nvchip", NVChipSHA256: hexSHA256(nvb), Persistent: persistent}
	var l1 *ek.Key
	for _, is := range issued {
		if is.Alg == ek.RSA2048 {
			l1 = is.Key
		}
	}
	if m.AttestationManifestSHA512, err = attestDigest(im, l1); err != nil {
		return nil, err
	}
	fill := func(f *os.File) error { _, err := f.Write(nvb); return err }
	if j.Container != nil {
		m.Format, m.Container = "state", j.Container.Name()
		if fill, err = j.Container.Prepare(j.Output, j.Key, nvb, j.Create); err != nil {
			return nil, err
		}
	}
	// The image is hashed as staged, before it is put in place: a run
	// stopped meanwhile leaves no image behind.
	write := fill
	fill = func(f *os.File) error {
		if err := write(f); err != nil {
			return err
		}
		sum, err := fileSHA256(f)
		m.ImageSHA256 = sum
		return err
	}
	if err := b.Add(j.Output, 0o600, j.Force, fill); err != nil {
		return nil, err
	}
	if j.CertDir != "" {
		if err := b.MkdirAll(j.CertDir); err != nil {
			return nil, err
		}
	}
	for _, is := range issued {
		pub, _ := is.Key.CryptoPublic()
		mc := ManifestCert{Alg: string(is.Alg), Index: fmt.Sprintf("0x%08x", is.Index), Name: fmt.Sprintf("%x", is.Key.Name),
			KeySHA256: KeyFingerprint(pub), Serial: is.Cert.SerialNumber.Text(16), CertSHA256: hexSHA256(is.Cert.Raw),
			Issuer: is.Cert.Issuer.String(), NotAfter: is.Cert.NotAfter.UTC().Format(time.RFC3339)}
		if j.CertDir != "" {
			der, err := x509.MarshalPKIXPublicKey(pub)
			if err != nil {
				return nil, err
			}
			files := CertDirFiles(j.CertDir, is.Alg)
			for i, data := range [][]byte{ekcert.EncodeCert(is.Cert), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})} {
				if err := b.Add(files[i], 0o644, j.Force, func(f *os.File) error { _, err := f.Write(data); return err }); err != nil {
					return nil, err
				}
			}
			mc.CertFile, mc.EKFile = files[0], files[1]
		}
		m.EKs = append(m.EKs, mc)
	}
	if err = j.addDevIDs(&b, devids, m); err != nil {
		return nil, err
	}
	if err := b.Commit(); err != nil {
		return nil, err
	}
	return m, nil
}

// fileSHA256 hashes a file's content as written (holes read as zeros).
func fileSHA256(f *os.File) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
