package simcheck

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
)

// The IAK and IDevID templates (unique "IAK"/"IDEVID", signing schemes,
// authPolicy digests) give the keys the simulator's TPM2_CreatePrimary
// returns in the endorsement hierarchy: ECC with the TCG candidate mode,
// RSA-2048 with the simulator's own one. (The simulator has no RSA-3072;
// the real TCG builds are checked outside CI.)
func TestSimulatorAgreesDevID(t *testing.T) {
	seeds := 4
	if testing.Short() {
		seeds = 2
	}
	for s := int64(0); s < int64(seeds); s++ {
		sim, err := simulator.GetWithFixedSeedInsecure(100 + s)
		if err != nil {
			t.Fatal(err)
		}
		tpm := transport.FromReadWriter(sim)
		for _, kind := range []ek.DevIDKind{ek.IAK, ek.IDevID} {
			for _, c := range []struct {
				alg  ek.Alg
				mode ek.CandidateMode
			}{{ek.ECCP256, ek.Reversed1_84}, {ek.ECCP384, ek.Reversed1_84}, {ek.RSA2048, ek.BigEndianMS}} {
				tmpl, err := ek.DevIDTemplate(kind, c.alg)
				if err != nil {
					t.Fatal(err)
				}
				rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
				if err != nil {
					t.Fatalf("seed %d %s %s: CreatePrimary: %v", s, kind, c.alg, err)
				}
				tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm)
				k, err := ek.DeriveDevID(simEPS(100+s), kind, c.alg, c.mode)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := k.TPM2BPublic(), tpm2.Marshal(rsp.OutPublic); !bytes.Equal(got, want) {
					t.Errorf("seed %d %s %s: derived key differs from the simulator's\n got %x\nwant %x", s, kind, c.alg, got, want)
				}
				if !bytes.Equal(k.Name, rsp.Name.Buffer) {
					t.Errorf("seed %d %s %s: Name %x, simulator %x", s, kind, c.alg, k.Name, rsp.Name.Buffer)
				}
			}
		}
		sim.Close()
	}
}
