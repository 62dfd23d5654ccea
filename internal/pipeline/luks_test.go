package pipeline

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/luks"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
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
