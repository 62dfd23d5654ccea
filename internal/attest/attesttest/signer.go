// Package attesttest signs SEV-SNP attestation reports with go-sev-guest's
// test-only ARK -> ASK -> VCEK chain, for tests of package attest and of
// the command line. Nothing it signs chains to AMD's real roots.
package attesttest

import (
	"encoding/pem"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtest "github.com/google/go-sev-guest/testing"
)

// Signer is a test AMD secure processor.
type Signer struct{ s *sevtest.AmdSigner }

// New makes a test chain for a product (e.g. "Milan-B0").
func New(product string) (*Signer, error) {
	s, err := sevtest.DefaultTestOnlyCertChain(product, time.Now().Add(-time.Hour))
	if err != nil {
		return nil, err
	}
	return &Signer{s: s}, nil
}

// Report describes the report to sign.
type Report struct {
	Version     uint32 // 0: 2
	VMPL        uint32
	Policy      uint64 // 0: 0x30000 (SMT allowed, no debug)
	ReportData  [64]byte
	Measurement []byte // 48 bytes or nil
	ReportID    []byte // 32 bytes or nil
	ReportedTCB uint64
	FMS         uint32 // CPUID_1_EAX family/model/stepping (version 3 and later)
	VLEK        bool   // signed with the VLEK instead of the VCEK
}

func sized(b []byte, n int) []byte {
	out := make([]byte, n)
	copy(out, b)
	return out
}

// Sign returns the raw signed report (1184 bytes), signed with the VCEK.
func (s *Signer) Sign(r Report) ([]byte, error) {
	if r.Version == 0 {
		r.Version = 2
	}
	if r.Policy == 0 {
		r.Policy = 0x30000
	}
	rep := &spb.Report{
		Version: r.Version, Policy: r.Policy, Vmpl: r.VMPL, SignatureAlgo: abi.SignEcdsaP384Sha384,
		CurrentTcb: r.ReportedTCB, ReportedTcb: r.ReportedTCB, CommittedTcb: r.ReportedTCB, LaunchTcb: r.ReportedTCB,
		FamilyId: make([]byte, 16), ImageId: make([]byte, 16), ReportData: r.ReportData[:],
		Measurement: sized(r.Measurement, 48), HostData: make([]byte, 32), IdKeyDigest: make([]byte, 48),
		AuthorKeyDigest: make([]byte, 48), ReportId: sized(r.ReportID, 32), ReportIdMa: make([]byte, 32),
		ChipId: s.s.HWID[:], Signature: make([]byte, 512), Cpuid1EaxFms: r.FMS,
	}
	if r.VLEK {
		rep.SignerInfo = abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VlekReportSigner})
	}
	raw, err := abi.ReportToAbiBytes(rep)
	if err != nil {
		return nil, err
	}
	R, S, err := s.s.Sign(abi.SignedComponent(raw))
	if err != nil {
		return nil, err
	}
	if err := abi.SetSignature(R, S, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// CertTable is the certificate table a host returns (auxblob).
func (s *Signer) CertTable() ([]byte, error) { return s.s.CertTableBytes() }

// VCEK is the VCEK certificate, DER.
func (s *Signer) VCEK() []byte { return s.s.Vcek.Raw }

// VLEKRootsPEM is the ASVK then the ARK in PEM (.../vlek/v1/PRODUCT/cert_chain).
func (s *Signer) VLEKRootsPEM() []byte {
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.s.Asvk.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.s.Ark.Raw})...)
}

// RootsPEM is the ASK then the ARK in PEM, as AMD's key distribution
// service serves a product's cert_chain.
func (s *Signer) RootsPEM() []byte {
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.s.Ask.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.s.Ark.Raw})...)
}
