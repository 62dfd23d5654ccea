package fleet

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/container"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/luks"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
)

// Defaults fill the empty fields of a VM.
type Defaults struct {
	Profile   string
	Container string // "": the profile's
	Size      int64
	Algs      []ek.Alg
	Strength  int
	ZeroFree  bool
	// DevID are the device identity keys of every VM; its DeviceSerial is
	// a template in which {name} is the VM's name ("": "{name}"), used
	// where the manifest has no device_serial.
	DevID pipeline.DevIDSpec
}

// Options control a run.
type Options struct {
	Dir      string
	Jobs     int
	Cert     pipeline.CertOptions
	Defaults Defaults
	KBSPath  string // resource path template, {name} replaced
	// KBSAdminToken is the broker's admin token file the kbs-client lines
	// name ("": the script's KBS_ADMIN_TOKEN).
	KBSAdminToken string
	// Event is called (from one goroutine at a time) after each VM.
	Event func(Event)
	// LUKS is how VMs with a disk column are enrolled (nil: refused).
	LUKS *LUKS
}

// LUKS says how batch enrolls the VMs' LUKS2 disks into their vTPMs.
type LUKS struct {
	Gen    luks.Generation
	Policy *luks.Policy
}

// Event reports one VM.
type Event struct {
	Name    string        `json:"name"`
	Status  string        `json:"status"` // made, verified (already there), failed
	Error   string        `json:"error,omitempty"`
	Elapsed time.Duration `json:"-"`
	Millis  int64         `json:"ms"`
	Done    int           `json:"done"`
	Total   int           `json:"total"`
}

// Summary is the outcome of a run.
type Summary struct {
	Total       int      `json:"total"`
	Made        int      `json:"made"`
	Verified    int      `json:"verified"`
	Failed      int      `json:"failed"`
	NotStarted  int      `json:"not_started"`
	Interrupted bool     `json:"interrupted"`
	Failures    []string `json:"failures,omitempty"`
	Seconds     float64  `json:"seconds"`
}

// vmRecord is what a VM directory says about itself (vm.json).
type vmRecord struct {
	Name         string `json:"name"`
	Profile      string `json:"profile"`
	Container    string `json:"container"`
	EK           string `json:"ek"`
	KeyFile      string `json:"key_file,omitempty"` // an existing key named by the manifest
	IAK          string `json:"iak,omitempty"`
	IDevID       string `json:"idevid,omitempty"`
	DeviceSerial string `json:"device_serial,omitempty"`
	Platform     bool   `json:"platform_certificate,omitempty"`
	// The enrolled LUKS2 disk: which keyslot and token hold the vTPM's secret.
	Disk         string `json:"disk,omitempty"`
	DiskKeyslot  *int   `json:"disk_keyslot,omitempty"`
	DiskToken    *int   `json:"disk_token,omitempty"`
	GuestSystemd int    `json:"guest_systemd,omitempty"`
}

const lockName = ".vtpm-mfg-batch.lock"

// lockDir takes the run's lock on dir.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", dir, atomicfile.ErrText(err))
	}
	if err := atomicfile.Lock(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: another batch run is working on this directory; wait for it or use another --out-dir", dir)
	}
	return f, nil
}

// Run manufactures every VM not yet in opts.Dir and re-verifies those
// that are, in parallel; each VM directory appears only when complete.
func Run(ctx context.Context, vms []VM, opts Options) (*Summary, error) {
	start := time.Now()
	if _, err := Plan(vms, opts); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %v", opts.Dir, atomicfile.ErrText(err))
	}
	lk, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	defer lk.Close()
	removeStale(opts.Dir)
	jobs := max(opts.Jobs, 1)
	s := &Summary{Total: len(vms)}
	work := make(chan VM)
	var mu sync.Mutex
	report := func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		switch ev.Status {
		case "made":
			s.Made++
		case "verified":
			s.Verified++
		default:
			s.Failed++
			s.Failures = append(s.Failures, ev.Name+": "+ev.Error)
		}
		ev.Done, ev.Total, ev.Millis = s.Made+s.Verified+s.Failed, s.Total, ev.Elapsed.Milliseconds()
		if opts.Event != nil {
			opts.Event(ev)
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < jobs; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for vm := range work {
				t0 := time.Now()
				status, err := one(vm, opts)
				ev := Event{Name: vm.Name, Status: status, Elapsed: time.Since(t0)}
				if err != nil {
					ev.Status, ev.Error = "failed", err.Error()
				}
				report(ev)
			}
		}()
	}
feed:
	for _, vm := range vms {
		select {
		case <-ctx.Done():
			break feed
		case work <- vm:
		}
	}
	close(work)
	wg.Wait()
	s.NotStarted = s.Total - s.Made - s.Verified - s.Failed
	s.Interrupted = ctx.Err() != nil
	sort.Strings(s.Failures)
	if err := WriteIndex(opts.Dir, opts.Cert.CA.Cert, opts.Cert.CA.Chain, opts.KBSPath, opts.KBSAdminToken); err != nil {
		return s, err
	}
	s.Seconds = time.Since(start).Seconds()
	return s, nil
}

// removeStale deletes the temporary directories of killed runs.
func removeStale(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// Plan resolves every VM against the defaults before any work, so that a
// row no VM can be made from stops the run before it starts; it returns
// the containers the VMs are written in.
func Plan(vms []VM, opts Options) (map[string]bool, error) {
	used := map[string]bool{}
	for _, vm := range vms {
		_, f, _, _, err := resolve(vm, opts)
		if err != nil {
			where := vm.Name
			if vm.Line > 0 {
				where = fmt.Sprintf("line %d (%s)", vm.Line, vm.Name)
			}
			return nil, fmt.Errorf("%s: %v", where, err)
		}
		used[f.Name()] = true
	}
	return used, nil
}

// resolve fills a VM's empty fields from the defaults.
func resolve(vm VM, opts Options) (*nv.Profile, container.Format, pipeline.CreateOptions, []ek.Alg, error) {
	d := opts.Defaults
	co := pipeline.CreateOptions{Size: d.Size, Strength: d.Strength, ZeroFree: d.ZeroFree}
	p, err := nv.Get(cmpOr(vm.Profile, d.Profile))
	if err != nil {
		return nil, nil, co, nil, err
	}
	cname := cmpOr(vm.Container, d.Container)
	f, err := pipeline.ResolveContainer(p, cname, cname != "")
	if err != nil {
		return nil, nil, co, nil, err
	}
	if vm.Size != "" {
		if co.Size, err = container.ParseSize(vm.Size); err != nil {
			return nil, nil, co, nil, err
		}
	}
	if co.Size != 0 {
		if err := f.CheckSize(co.Size, co); err != nil {
			src := "the size column"
			if vm.Size == "" {
				src = "--size"
			}
			return nil, nil, co, nil, fmt.Errorf("%s: %v", src, err)
		}
	}
	algs := d.Algs
	if vm.EK != "" {
		if algs, err = ek.ParseAlgs(vm.EK); err != nil {
			return nil, nil, co, nil, err
		}
	}
	return p, f, co, algs, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func algList(algs []ek.Alg) string {
	s := make([]string, len(algs))
	for i, a := range algs {
		s[i] = string(a)
	}
	return strings.Join(s, ",")
}

// one makes (or re-verifies) one VM.
func one(vm VM, opts Options) (string, error) {
	final := filepath.Join(opts.Dir, vm.Name)
	if _, err := os.Stat(filepath.Join(final, "manifest.json")); err == nil {
		os.Remove(filepath.Join(opts.Dir, "."+vm.Name+".luks-pending")) // the enrollment completed
		return "verified", VerifyVM(final, opts.Cert.CA.Cert, opts.Cert.CA.Chain)
	} else if _, err := os.Stat(final); err == nil {
		return "", fmt.Errorf("%s exists but is not a complete VM directory (no manifest.json); move it away", final)
	}
	p, f, co, algs, err := resolve(vm, opts)
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(opts.Dir, "."+vm.Name+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // gone after the rename; cleans up on failure
	rec := vmRecord{Name: vm.Name, Profile: p.Name, Container: f.Name(), EK: algList(algs), KeyFile: vm.KeyFile}
	devid, err := vmDevID(vm, opts.Defaults.DevID, p)
	if err != nil {
		return "", err
	}
	rec.IAK, rec.IDevID, rec.DeviceSerial, rec.Platform = string(devid.IAK), string(devid.IDevID), devid.DeviceSerial, devid.Platform != nil
	var key []byte
	if vm.KeyFile != "" {
		if key, err = (keyfile.Source{File: vm.KeyFile}).Load(nil); err != nil {
			return "", err
		}
	} else {
		key = make([]byte, keyfile.Size)
		if _, err := rand.Read(key); err != nil {
			return "", err
		}
		if err := atomicfile.WriteSecret(filepath.Join(tmp, "state.key"), key, false); err != nil {
			return "", err
		}
	}
	defer keyfile.Wipe(key)
	job := pipeline.Job{Profile: p, Algs: algs, Cert: opts.Cert, Container: f, Create: co, Key: key,
		Output: filepath.Join(tmp, "state.img"), CertDir: tmp, DevID: devid}
	pending := filepath.Join(opts.Dir, "."+vm.Name+".luks-pending")
	if vm.Disk != "" {
		if opts.LUKS == nil {
			return "", fmt.Errorf("disk %s: give batch a PCR policy for the disks (--tpm2-public-key, --tpm2-pcrs or --no-pcr-policy)", vm.Disk)
		}
		if err := undoPending(pending, vm); err != nil {
			return "", err
		}
		job.Persist.SRK = opts.LUKS.Gen.UsesSRK()
	}
	m, err := job.Run()
	if err != nil {
		return "", err
	}
	if vm.Disk != "" {
		lj := &pipeline.LUKSEnrollJob{State: job.Output, Key: key, Profile: p.Name, Disk: vm.Disk, DiskKeyFile: vm.DiskKeyFile,
			Gen: opts.LUKS.Gen, Policy: opts.LUKS.Policy,
			BeforeDiskChange: func(slot, token int) error { return writePending(pending, vm.Disk, slot, token) }}
		res, err := lj.Run()
		if err != nil {
			return "", err
		}
		defer os.Remove(pending) // once the VM directory is in place, or after undoing
		rec.Disk, rec.DiskKeyslot, rec.DiskToken, rec.GuestSystemd = vm.Disk, &res.Keyslot, &res.Token, int(opts.LUKS.Gen)
		undo := func() { pipeline.LUKSUndo(vm.Disk, vm.DiskKeyFile, res.Keyslot, res.Token) }
		defer func() {
			if _, err := os.Stat(final); err != nil {
				undo()
			}
		}()
	}
	// Paths in the VM's files are relative to its directory.
	m.Output = "state.img"
	for i := range m.EKs {
		m.EKs[i].CertFile, m.EKs[i].EKFile = filepath.Base(m.EKs[i].CertFile), filepath.Base(m.EKs[i].EKFile)
	}
	if m.Platform != nil {
		m.Platform.CertFile = filepath.Base(m.Platform.CertFile)
	}
	for i := range m.DevIDs {
		m.DevIDs[i].CertFile, m.DevIDs[i].PubFile = filepath.Base(m.DevIDs[i].CertFile), filepath.Base(m.DevIDs[i].PubFile)
	}
	for name, v := range map[string]any{"manifest.json": m, "vm.json": rec} {
		b, _ := json.MarshalIndent(v, "", "  ")
		if err := atomicfile.Create(filepath.Join(tmp, name), 0o644, false, func(f *os.File) error { _, err := f.Write(append(b, '\n')); return err }); err != nil {
			return "", err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if errors.Is(err, os.ErrExist) || errors.Is(err, unix.ENOTEMPTY) {
			return "", fmt.Errorf("%s appeared meanwhile", final)
		}
		return "", err
	}
	return "made", atomicfile.SyncDir(opts.Dir)
}

// pendingEnrollment is the journal of a disk enrollment whose VM directory
// is not yet in place.
type pendingEnrollment struct {
	Disk    string `json:"disk"`
	Keyslot int    `json:"keyslot"`
	Token   int    `json:"token"`
}

func writePending(path, disk string, slot, token int) error {
	b, _ := json.Marshal(pendingEnrollment{Disk: disk, Keyslot: slot, Token: token})
	return atomicfile.Create(path, 0o644, true, func(f *os.File) error { _, err := f.Write(b); return err })
}

// undoPending removes what an enrollment interrupted before its VM
// directory appeared left on the disk (its vTPM is gone).
func undoPending(path string, vm VM) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %v", path, atomicfile.ErrText(err))
	}
	var p pendingEnrollment
	if err := json.Unmarshal(b, &p); err != nil || p.Disk != vm.Disk {
		return fmt.Errorf("%s: an interrupted enrollment of another disk (%q); check that disk and remove this file", path, p.Disk)
	}
	if err := pipeline.LUKSUndo(p.Disk, vm.DiskKeyFile, p.Keyslot, p.Token); err != nil {
		return fmt.Errorf("undoing the interrupted enrollment of %s: %w", p.Disk, err)
	}
	return os.Remove(path)
}
