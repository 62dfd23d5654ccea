package pipeline

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vtpm-mfg/vtpm-mfg/internal/blockfs"
	"github.com/vtpm-mfg/vtpm-mfg/internal/container"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// ContainerInfo describes a state image.
type ContainerInfo = container.Info

// CreateOptions control a new state image.
type CreateOptions = container.CreateOptions

// PairingError reports a container that the profile's SVSM does not read.
type PairingError struct{ Msg string }

func (e *PairingError) Error() string { return e.Msg }

// ResolveContainer returns the container to write for a profile: the
// profile's own when name is empty, or the named one. A container other
// than the profile's is refused unless explicit is set (the user named it
// with --container on purpose).
func ResolveContainer(p *nv.Profile, name string, explicit bool) (container.Format, error) {
	if name == "" {
		name = p.Container
	}
	f, err := container.Get(name)
	if err != nil {
		return nil, err
	}
	if name != p.Container && !explicit {
		return nil, &PairingError{fmt.Sprintf("profile %s is used by an SVSM that reads %s state images, not %s; give --container %s explicitly to write this pairing anyway", p.Name, p.Container, name, name)}
	}
	return f, nil
}

// pairingFinding tells when an image's container is not the one its TPM
// profile's SVSM reads.
func pairingFinding(p *nv.Profile, info *container.Info) string {
	if info == nil || info.Container == p.Container {
		return ""
	}
	return fmt.Sprintf("container %s holds a %s NVChip, but the %s SVSM keeps its TPM in %s: it would not find this TPM", info.Container, p.Name, p.Name, p.Container)
}

// ImageFindings are the container-level findings of a state image for
// verify: what makes the SVSM discard or not find the TPM.
func ImageFindings(im *nv.Image, info *container.Info) []string {
	var f []string
	if info == nil {
		return nil
	}
	for _, x := range info.Findings {
		f = append(f, info.Path+": "+x)
	}
	if s := pairingFinding(im.Profile, info); s != "" {
		f = append(f, info.Path+": "+s)
	}
	return f
}

// ReadNVChipFile reads a raw NVChip of the one size the TPM accepts.
func ReadNVChipFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot read NVChip: %w", path, errors.Unwrap(err))
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not an NVChip", path)
	}
	if st.Size() != blockfs.NVSize {
		return nil, fmt.Errorf("%s: NVChip is %d bytes, must be exactly %d; the SVSM's TPM would re-manufacture any other size", path, st.Size(), blockfs.NVSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// WriteState encrypts an NVChip into a new state image of the given
// container.
func WriteState(f container.Format, path string, key, nvchip []byte, o CreateOptions) error {
	return container.Create(f, path, key, nvchip, o)
}

// ReadStateNVChip decrypts the NVChip of a state image of any container.
func ReadStateNVChip(path string, key []byte) ([]byte, *ContainerInfo, error) {
	f, err := container.DetectFile(path)
	if err != nil {
		return nil, nil, err
	}
	return f.Read(path, key)
}

// RotateKey re-encrypts a state image under a new key, in place.
func RotateKey(path string, oldKey, newKey []byte) error {
	f, err := container.DetectFile(path)
	if err != nil {
		return err
	}
	return f.Update(path, oldKey, newKey, nil)
}

// Install describes a certificate to put into a state image: either DER
// bytes issued elsewhere (checked first) or certificate options to issue one.
type Install struct {
	Alg      ek.Alg
	Profile  string // "" detects it
	CertDER  []byte
	CertName string // where CertDER came from, for messages
	Force    bool   // accept a certificate that deviates from the profile
	Lock     bool
	Issue    *CertOptions
}

// InstallCert changes the state image atomically: the certificate is
// checked against the EK the image's TPM derives (never overridable) and the
// TCG profile, then stored; or a new one is issued. It returns a summary.
func InstallCert(state string, key []byte, in Install) (string, error) {
	var summary string
	f, err := container.DetectFile(state)
	if err != nil {
		return "", err
	}
	err = f.Update(state, key, nil, func(nvb []byte) ([]byte, error) {
		im, err := ParseNV(state, nvb, in.Profile)
		if err != nil {
			return nil, err
		}
		if in.Issue != nil {
			is, err := IssueAndInstall(im, in.Alg, *in.Issue)
			if err != nil {
				return nil, err
			}
			summary = "issued and installed a new " + string(in.Alg) + " EK certificate, serial " + is.Cert.SerialNumber.Text(16)
			return im.Bytes(), nil
		}
		_, pub, err := DerivePublic(im, in.Alg)
		if err != nil {
			return nil, err
		}
		info := TPMInfo(im.Profile)
		res, err := ekcert.Check(in.CertDER, ekcert.CheckOptions{Want: pub, TPM: &info})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.CertName, err)
		}
		if res.KeyMismatch {
			return nil, fmt.Errorf("%s: the certificate is for another key (%s), this TPM's %s EK is %s; refusing", in.CertName, KeyFingerprint(res.Cert.PublicKey), in.Alg, KeyFingerprint(pub))
		}
		if len(res.Problems) > 0 && !in.Force {
			return nil, fmt.Errorf("%s: does not meet the TCG EK certificate profile:\n  %s\n(use --force to install it anyway)", in.CertName, strings.Join(res.Problems, "\n  "))
		}
		if err := PutCert(im, in.Alg, in.CertDER, in.Lock); err != nil {
			return nil, fmt.Errorf("%s: %w", in.CertName, err)
		}
		summary = "installed " + in.CertName + " as the " + string(in.Alg) + " EK certificate"
		return im.Bytes(), nil
	})
	return summary, err
}
