package pipeline

import (
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/luks"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/seal"
)

// A token that names one parent but was sealed under the other key of the
// same vTPM is reported as such; a changed policy hash is reported too.
func TestCheckTokenNamesTheParent(t *testing.T) {
	im, err := nv.Manufacture(nv.SVSMPoC)
	if err != nil {
		t.Fatal(err)
	}
	var parents [2]*SealParent
	for i := range parents {
		if parents[i], err = DeriveSealParent(im, i == 1); err != nil {
			t.Fatal(err)
		}
	}
	p := &luks.Policy{}
	legacy, err := LUKSSeal(im, luks.Systemd252, p, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	srk, err := LUKSSeal(im, luks.Systemd254, p, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The 252 blob with the 254 token's tpm2_srk.
	tok := *legacy.Token
	tok.SRK = srk.Token.SRK
	c := TokenCheck{Keyslot: 1}
	checkToken(&c, &tok, parents, nil, CheckOptions{})
	if c.OK || !strings.Contains(c.Problem, "sealed under the transient ECC primary key of systemd 252") || !strings.Contains(c.Problem, "but the token says the storage root key") {
		t.Errorf("got %q", c.Problem)
	}
	tok = *srk.Token
	tok.PolicyHash = strings.Repeat("ab", 32)
	c = TokenCheck{Keyslot: 1}
	checkToken(&c, &tok, parents, nil, CheckOptions{})
	if c.OK || !strings.Contains(c.Problem, "differs from the sealed object's authPolicy") {
		t.Errorf("got %q", c.Problem)
	}
	// The serialized SRK names this vTPM's SRK exactly.
	b, _ := base64.StdEncoding.DecodeString(srk.Token.SRK)
	h, name, _, err := luks.ParseHandle(b)
	if err != nil || h != SRKHandle || string(name) != string(parents[1].Key.Name) {
		t.Errorf("tpm2_srk: %v %#x", err, h)
	}
}

// Tokens systemd-cryptenroll 252 (Debian 12's 252.39) made against the real
// TCG TPM (svsm-poc build) running testdata/systemd252/NVChip, which
// vtpm-mfg manufactured: --tpm2-pcrs=7; --tpm2-public-key with
// --tpm2-public-key-pcrs=11 (it kept PCR 7 too); --tpm2-pcrs= (none);
// --tpm2-pcrs=7 --tpm2-with-pin=yes with the PIN 2468. PCR 7 was all
// zeros. Each opens offline under the legacy primary key derived here, and
// its policy digest is the one computed here from what the token states.
func TestReadsSystemd252Tokens(t *testing.T) {
	im, err := ReadNVChip("testdata/systemd252/NVChip", "")
	if err != nil {
		t.Fatal(err)
	}
	var parents [2]*SealParent
	for i := range parents {
		if parents[i], err = DeriveSealParent(im, i == 1); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"PCRs [7] (sha256)", "signed PCR policy over PCRs [11], PCRs [7] (sha256)", "no PCR policy", "PCRs [7] (sha256), PIN"}
	for i, w := range want {
		raw, err := os.ReadFile(fmt.Sprintf("testdata/systemd252/token%d.json", i))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := luks.ParseToken(raw)
		if err != nil {
			t.Fatal(err)
		}
		blob, _ := base64.StdEncoding.DecodeString(tok.Blob)
		obj, rest, err := seal.ParseBlob(blob)
		if err != nil || len(rest) != 0 {
			t.Fatalf("token %d: %v", i, err)
		}
		if tok.SRK != "" || tok.PrimaryAlg != "ecc" || obj.Public.ObjectAttributes != luks.Systemd252.Attributes(tok.PIN) {
			t.Errorf("token %d: not the 252 format: srk %q alg %q attributes %+v", i, tok.SRK, tok.PrimaryAlg, obj.Public.ObjectAttributes)
		}
		c, err := seal.Open(&parents[0].Parent, obj)
		if err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		if len(c.Data) != luks.SecretSize {
			t.Errorf("token %d: secret of %d bytes", i, len(c.Data))
		}
		if _, err := seal.Open(&parents[1].Parent, obj); err == nil {
			t.Errorf("token %d opens under the SRK too", i)
		}
		desc, err := checkPolicy(tok, obj.Public.AuthPolicy.Buffer, CheckOptions{PCRs: map[int][]byte{7: make([]byte, 32)}})
		if err != nil || desc != w {
			t.Errorf("token %d: policy %q, %v; want %q", i, desc, err, w)
		}
		if tok.PIN {
			auth, _ := luks.PINAuth([]byte("2468"), nil)
			if string(auth) != string(c.AuthValue) {
				t.Errorf("token %d: authValue %x, SHA-256 of the PIN %x", i, c.AuthValue, auth)
			}
		}
	}
}
