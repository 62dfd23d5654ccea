package simcheck

import (
	"bytes"
	"encoding/hex"
	"math/rand"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
)

// simEPS is the EPS GetWithFixedSeedInsecure puts in the simulator: the
// first 64 bytes math/rand produces for the seed.
func simEPS(seed int64) []byte {
	b := make([]byte, 64)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func simEK(t *testing.T, sim *simulator.Simulator, alg ek.Alg) []byte {
	tpm := transport.FromReadWriter(sim)
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(ek.Template(alg)),
	}.Execute(tpm)
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm)
	return tpm2.Marshal(rsp.OutPublic)
}

// For many seeds the simulator's EKs equal ours: ECC directly, RSA with the
// simulator's own candidate conversion. This exercises the KDF, DRBG, sieve,
// Miller-Rabin and key assembly against a real TPM implementation.
func TestSimulatorAgrees(t *testing.T) {
	seeds := 24
	if testing.Short() {
		seeds = 6
	}
	for s := int64(0); s < int64(seeds); s++ {
		sim, err := simulator.GetWithFixedSeedInsecure(s)
		if err != nil {
			t.Fatal(err)
		}
		eps := simEPS(s)
		for _, c := range []struct {
			alg  ek.Alg
			mode ek.CandidateMode
		}{{ek.ECCP256, ek.Reversed1_83}, {ek.RSA2048, ek.BigEndianMS}} {
			want := simEK(t, sim, c.alg)
			k, err := ek.Derive(eps, c.alg, c.mode, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.TPM2BPublic(); !bytes.Equal(got, want) {
				t.Errorf("seed %d %s: derived EK differs from the simulator's\n got %s\nwant %s", s, c.alg, hex.EncodeToString(got)[:80], hex.EncodeToString(want)[:80])
			}
		}
		sim.Close()
	}
}

// DeriveTemplate agrees with the simulator on templates other than the EK
// ones: storage root keys (other attributes, empty authPolicy and unique),
// and ECC P-384 with nameAlg SHA-384 (its Name, the DRBG personalization,
// uses SHA-384). The simulator has no RSA-3072/4096; those are checked
// against the real TCG builds' vectors in package ek.
func TestSimulatorAgreesTemplates(t *testing.T) {
	p384 := tpm2.ECCSRKTemplate
	p, _ := p384.Parameters.ECCDetail()
	pp := *p
	pp.CurveID = tpm2.TPMECCNistP384
	p384.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &pp)
	p384.NameAlg = tpm2.TPMAlgSHA384
	p384.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	srkECC := tpm2.ECCSRKTemplate
	srkECC.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	srkRSA := tpm2.RSASRKTemplate
	srkRSA.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	seeds := 8
	if testing.Short() {
		seeds = 3
	}
	for s := int64(0); s < int64(seeds); s++ {
		sim, err := simulator.GetWithFixedSeedInsecure(s)
		if err != nil {
			t.Fatal(err)
		}
		tpm := transport.FromReadWriter(sim)
		for _, c := range []struct {
			name string
			tmpl tpm2.TPMTPublic
			mode ek.CandidateMode
		}{{"ecc-p384-sha384", p384, ek.Reversed1_84}, {"srk-ecc", srkECC, ek.Reversed1_84}, {"srk-rsa", srkRSA, ek.BigEndianMS}} {
			rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(c.tmpl)}.Execute(tpm)
			if err != nil {
				t.Fatalf("seed %d %s: CreatePrimary: %v", s, c.name, err)
			}
			tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm)
			want := tpm2.Marshal(rsp.OutPublic)
			k, err := ek.DeriveTemplate(simEPS(s), c.tmpl, c.mode, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.TPM2BPublic(); !bytes.Equal(got, want) {
				t.Errorf("seed %d %s: derived key differs from the simulator's\n got %x\nwant %x", s, c.name, got, want)
			}
			if !bytes.Equal(k.Name, rsp.Name.Buffer) {
				t.Errorf("seed %d %s: Name %x, simulator %x", s, c.name, k.Name, rsp.Name.Buffer)
			}
		}
		sim.Close()
	}
}
