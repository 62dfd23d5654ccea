package pipeline

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/statefile"
)

// ContainerInfo describes a state image.
type ContainerInfo = statefile.Info

// DefaultImageSize is the size of new state images.
const DefaultImageSize = statefile.DefaultImageSize

// ReadNVChipFile reads a raw NVChip of the one size the TPM accepts.
func ReadNVChipFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot read NVChip: %w", path, errors.Unwrap(err))
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not an NVChip", path)
	}
	if st.Size() != statefile.NVSize {
		return nil, fmt.Errorf("%s: NVChip is %d bytes, must be exactly %d; the SVSM's TPM would re-manufacture any other size", path, st.Size(), statefile.NVSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// WriteState encrypts an NVChip into a new state image.
func WriteState(path string, key, nvchip []byte, size int64, overwrite bool) error {
	return statefile.Create(path, key, nvchip, size, overwrite)
}

// ReadStateNVChip decrypts the NVChip of a state image.
func ReadStateNVChip(path string, key []byte) ([]byte, error) {
	nvb, _, err := statefile.Read(path, key)
	return nvb, err
}

// RotateKey re-encrypts a state image under a new key, in place.
func RotateKey(path string, oldKey, newKey []byte) error {
	return statefile.Update(path, oldKey, newKey, nil)
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
	err := statefile.Update(state, key, nil, func(nvb []byte) ([]byte, error) {
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
