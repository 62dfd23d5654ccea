package fleet

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/vtpm-mfg/vtpm-mfg/internal/attest"
	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
)

// AttestIdentities lists the vTPM manifests of a fleet's VMs, from its
// fleet.jsonl, each named by its VM.
func AttestIdentities(dir string) ([]attest.Expected, error) {
	p := filepath.Join(dir, "fleet.jsonl")
	b, err := input.ReadFile(p, "fleet index", 1<<30)
	if err != nil {
		return nil, fmt.Errorf("%w (is %s a directory made by vtpm-mfg batch?)", err, dir)
	}
	var out []attest.Expected
	others := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), len(b)+1)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var fl FleetLine
		if err := json.Unmarshal(sc.Bytes(), &fl); err != nil {
			return nil, fmt.Errorf("%s: line %d: %v", p, n, err)
		}
		if fl.AttestationManifestSHA512 == "" {
			others++
			continue
		}
		d, err := hex.DecodeString(fl.AttestationManifestSHA512)
		if err != nil || len(d) != 64 {
			return nil, fmt.Errorf("%s: line %d (%s): attestation_manifest_sha512 is not a SHA-512 in hex", p, n, fl.Name)
		}
		e := attest.Expected{Name: fmt.Sprintf("VM %s of fleet %s", fl.Name, dir)}
		copy(e.SHA512[:], d)
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: none of its %d VMs has an attestation_manifest_sha512: only svsm-2026 VMs have a vTPM manifest, and only VMs manufactured by a vtpm-mfg that records it; for another VM give its image (--state and its key) instead of --fleet", p, others)
	}
	return out, nil
}
