package pipeline

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"fmt"

	"github.com/vtpm-mfg/vtpm-mfg/internal/attest"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// ErrNoAttestation explains that a profile's SVSM line has no attestation
// protocol.
type ErrNoAttestation struct{ Profile string }

func (e *ErrNoAttestation) Error() string {
	return fmt.Sprintf("profile %s: this SVSM line (the proof-of-concept SVSM) has no attestation protocol (its SVSM protocols are core, vTPM and APIC), so there is no vTPM manifest to predict or verify; upstream SVSM (profile svsm-2026) reports one", e.Profile)
}

// AttestManifest is the vTPM service manifest the image's SVSM reports
// (SVSM_ATTEST_SINGLE_SERVICE with the vTPM GUID): the TPMT_PUBLIC of the
// EK the TPM creates for the L-1 template, the SVSM's DEFAULT_PUBLIC_AREA.
// Whether that EK is certified or not does not matter.
func AttestManifest(im *nv.Image) ([]byte, error) {
	if !im.Profile.Attestation {
		return nil, &ErrNoAttestation{Profile: im.Profile.Name}
	}
	k, err := DeriveEK(im, ek.RSA2048)
	if err != nil {
		return nil, err
	}
	return attest.VTPMManifest(k.Public), nil
}

// attestDigest is the hex SHA-512 of the image's vTPM manifest, "" for a
// profile without attestation. l1 is the image's L-1 EK if already
// derived (nil: derive it).
func attestDigest(im *nv.Image, l1 *ek.Key) (string, error) {
	if !im.Profile.Attestation {
		return "", nil
	}
	m := []byte(nil)
	if l1 != nil && l1.Alg == ek.RSA2048 {
		m = attest.VTPMManifest(l1.Public)
	} else {
		var err error
		if m, err = AttestManifest(im); err != nil {
			return "", err
		}
	}
	d := attest.Digest(m)
	return hex.EncodeToString(d[:]), nil
}

// AttestManifestSHA512 is the hex SHA-512 of the image's vTPM manifest,
// "" for a profile without attestation.
func AttestManifestSHA512(im *nv.Image) (string, error) { return attestDigest(im, nil) }

// ExpectedFromCert is the vTPM whose L-1 EK an EK certificate certifies.
func ExpectedFromCert(name string, c *x509.Certificate) (attest.Expected, error) {
	k, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return attest.Expected{}, fmt.Errorf("%s: certifies a %s key; the SVSM's vTPM manifest is the RSA-2048 EK (template L-1): give that EK's certificate (NV index 0x01C00002)", name, c.PublicKeyAlgorithm)
	}
	m, err := attest.ManifestForRSAKey(k)
	if err != nil {
		return attest.Expected{}, fmt.Errorf("%s: %v", name, err)
	}
	return attest.Expected{Name: fmt.Sprintf("the TPM certified by %s (serial %s)", name, c.SerialNumber.Text(16)), SHA512: attest.Digest(m)}, nil
}

// MaxEvidenceSize bounds the evidence files read (a report is 1184 bytes,
// a certificate table at most 16 KiB).
const MaxEvidenceSize = 1 << 20

// ReadEvidenceFile reads a small regular file (never blocking on a pipe or
// device), naming it in errors.
func ReadEvidenceFile(path, what string) ([]byte, error) {
	return input.ReadFile(path, what, MaxEvidenceSize)
}
