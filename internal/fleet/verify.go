package fleet

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/luks"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
)

func readRecord(dir string) (*vmRecord, *pipeline.Manifest, error) {
	var rec vmRecord
	var m pipeline.Manifest
	for name, v := range map[string]any{"vm.json": &rec, "manifest.json": &m} {
		b, err := input.ReadFile(filepath.Join(dir, name), "VM record", 16<<20)
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(b, v); err != nil {
			return nil, nil, fmt.Errorf("%s: %v; re-run batch to re-create this VM, or batch index if it was copied", filepath.Join(dir, name), err)
		}
	}
	return &rec, &m, nil
}

func (r *vmRecord) keyPath(dir string) string {
	if r.KeyFile != "" {
		return r.KeyFile
	}
	return filepath.Join(dir, "state.key")
}

// VerifyVM checks one VM directory: its image opens with its key, is the
// container its profile's SVSM reads, and every EK certificate is in NV,
// compliant, chained to the CA and certifies the derived EK.
func VerifyVM(dir string, ca *x509.Certificate, chain []*x509.Certificate) error {
	rec, m, err := readRecord(dir)
	if err != nil {
		return err
	}
	key, err := keyfile.Source{File: rec.keyPath(dir)}.Load(nil)
	if err != nil {
		return err
	}
	defer keyfile.Wipe(key)
	im, info, err := pipeline.ReadState(filepath.Join(dir, "state.img"), key, rec.Profile)
	if err != nil {
		return err
	}
	var algs []ek.Alg
	for _, a := range strings.Split(rec.EK, ",") {
		alg, err := ek.ParseAlg(a)
		if err != nil {
			return err
		}
		algs = append(algs, alg)
	}
	all := append([]*x509.Certificate{ca}, chain...)
	f := append(pipeline.ImageFindings(im, info), pipeline.Verify(im, pipeline.VerifyOptions{CA: all[len(all)-1:], Intermediates: all[:len(all)-1], Algs: algs,
		DevID: recDevID(rec)})...)
	if m.AttestationManifestSHA512 != "" {
		if d, err := pipeline.AttestManifestSHA512(im); err != nil || d != m.AttestationManifestSHA512 {
			f = append(f, fmt.Sprintf("%s: attestation_manifest_sha512 is not the SHA-512 of this image's vTPM manifest (%s%s); attest verify --fleet would name the wrong VM", filepath.Join(dir, "manifest.json"), d, errOrEmpty(err)))
		}
	}
	if rec.Disk != "" {
		if err := verifyDisk(im, rec); err != nil {
			f = append(f, err.Error())
		}
	}
	if len(f) > 0 {
		return errors.New(strings.Join(f, "; "))
	}
	return nil
}

// VMDirs lists the complete VM directories of a fleet directory.
func VMDirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", dir, atomicfile.ErrText(err))
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && e.Name() != "register" {
			if _, err := os.Stat(filepath.Join(dir, e.Name(), "manifest.json")); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// Result is the verification of one VM.
type Result struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// VerifyDir re-verifies every VM of a fleet directory in parallel.
func VerifyDir(ctx context.Context, dir string, ca *x509.Certificate, chain []*x509.Certificate, jobs int) ([]Result, error) {
	names, err := VMDirs(dir)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no VM directories", dir)
	}
	res := make([]Result, len(names))
	idx := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < max(jobs, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				res[i] = Result{Name: names[i], OK: true}
				if err := VerifyVM(filepath.Join(dir, names[i]), ca, chain); err != nil {
					res[i] = Result{Name: names[i], Error: err.Error()}
				}
			}
		}()
	}
	for i := range names {
		if ctx.Err() != nil {
			break
		}
		idx <- i
	}
	close(idx)
	wg.Wait()
	return res, ctx.Err()
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return ": " + err.Error()
}

// verifyDisk checks that the VM's disk still holds its token and that the
// token opens its keyslot on this vTPM.
func verifyDisk(im *nv.Image, rec *vmRecord) error {
	if rec.DiskToken == nil || rec.DiskKeyslot == nil {
		return fmt.Errorf("vm.json names disk %s but no keyslot and token", rec.Disk)
	}
	disk, err := luks.OpenDisk(rec.Disk)
	if err != nil {
		return err
	}
	res, err := pipeline.LUKSCheck(im, disk, pipeline.CheckOptions{})
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Token == *rec.DiskToken {
			if !r.OK {
				return fmt.Errorf("%s: %s", rec.Disk, r.Line())
			}
			if r.Keyslot != *rec.DiskKeyslot {
				return fmt.Errorf("%s: token %d names keyslot %d, vm.json keyslot %d", rec.Disk, r.Token, r.Keyslot, *rec.DiskKeyslot)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: systemd-tpm2 token %d of this VM is gone", rec.Disk, *rec.DiskToken)
}
