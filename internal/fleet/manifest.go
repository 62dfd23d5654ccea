// Package fleet manufactures many vTPMs in one run: a manifest of VMs
// (or a count and a name pattern), worked on in parallel, each VM's
// directory appearing only when complete, resumable after a crash, with a
// registration bundle for the key broker and the attestation verifier.
package fleet

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/container"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// VM is one row of a fleet manifest. Empty fields take the run's defaults.
type VM struct {
	Name      string `json:"name"`
	Profile   string `json:"profile,omitempty"`
	Container string `json:"container,omitempty"`
	Size      string `json:"size,omitempty"`
	EK        string `json:"ek,omitempty"`
	KeyFile   string `json:"key_file,omitempty"`
	// DeviceSerial names the VM in its IAK/IDevID certificates ("": the
	// run's default, the VM's name unless told otherwise).
	DeviceSerial string `json:"device_serial,omitempty"`
	// Disk is a LUKS2 disk (image file or block device) to enroll into the
	// VM's vTPM; DiskKeyFile holds a key that unlocks it now.
	Disk        string `json:"disk,omitempty"`
	DiskKeyFile string `json:"disk_key_file,omitempty"`
	Line        int    `json:"-"`
}

// set assigns a manifest column.
func (vm *VM) set(column, v string) {
	switch column {
	case "name":
		vm.Name = v
	case "profile":
		vm.Profile = v
	case "container":
		vm.Container = v
	case "size":
		vm.Size = v
	case "ek":
		vm.EK = v
	case "key_file":
		vm.KeyFile = v
	case "device_serial":
		vm.DeviceSerial = v
	case "disk":
		vm.Disk = v
	case "disk_key_file":
		vm.DiskKeyFile = v
	}
}

var columns = map[string]bool{"name": true, "profile": true, "container": true, "size": true, "ek": true, "key_file": true, "disk": true, "disk_key_file": true, "device_serial": true}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// reserved names would collide with the run's own files.
var reserved = map[string]bool{"register": true, "fleet.jsonl": true}

// MaxManifestBytes bounds a manifest (about a million VMs).
const MaxManifestBytes = 256 << 20

// ParseManifest reads a manifest: CSV with a header line, or JSON lines
// (one object per line). Every row is checked before anything is made.
func ParseManifest(path string) ([]VM, error) {
	data, err := input.ReadFile(path, "manifest", MaxManifestBytes)
	if err != nil {
		return nil, err
	}
	vms, err := parseManifest(path, data)
	if err != nil {
		return nil, err
	}
	return vms, Check(path, vms)
}

// parseManifest parses a manifest's bytes (path names it in errors) into
// at least one row, unchecked.
func parseManifest(path string, data []byte) ([]VM, error) {
	var vms []VM
	var err error
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		vms, err = parseJSONL(path, data)
	} else {
		vms, err = parseCSV(path, data)
	}
	if err != nil {
		return nil, err
	}
	if len(vms) == 0 {
		return nil, fmt.Errorf("%s: no VMs", path)
	}
	return vms, nil
}

func parseCSV(path string, data []byte) ([]VM, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.Comment = '#'
	r.TrimLeadingSpace = true
	head, err := r.Read()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: line 1: %v", path, err)
	}
	for i, h := range head {
		head[i] = strings.ToLower(strings.TrimSpace(h))
		if !columns[head[i]] {
			return nil, fmt.Errorf("%s: line 1: unknown column %q (known: name, profile, container, size, ek, key_file, device_serial, disk, disk_key_file)", path, h)
		}
	}
	var vms []VM
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A record that does not parse has no field positions; the
			// error carries its line.
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		line, _ := r.FieldPos(0)
		vm := VM{Line: line}
		for i, v := range rec {
			vm.set(head[i], strings.TrimSpace(v))
		}
		vms = append(vms, vm)
	}
	return vms, nil
}

func parseJSONL(path string, data []byte) ([]VM, error) {
	var vms []VM
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		t := bytes.TrimSpace(sc.Bytes())
		if len(t) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(t, &m); err != nil {
			return nil, fmt.Errorf("%s: line %d: %v", path, n, err)
		}
		vm := VM{Line: n}
		for k, v := range m {
			if !columns[k] {
				return nil, fmt.Errorf("%s: line %d: unknown field %q (known: name, profile, container, size, ek, key_file, device_serial, disk, disk_key_file)", path, n, k)
			}
			var s string
			switch x := v.(type) {
			case string:
				s = x
			case float64:
				// Whole numbers only, and only those a float64 holds
				// exactly: 1.5 or 1e30 must not become another size.
				if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
					return nil, fmt.Errorf("%s: line %d: field %q: %v is not a whole number that can be used exactly; write it as a string", path, n, k, x)
				}
				s = strconv.FormatInt(int64(x), 10)
			default:
				return nil, fmt.Errorf("%s: line %d: field %q must be a string", path, n, k)
			}
			vm.set(k, s)
		}
		vms = append(vms, vm)
	}
	return vms, sc.Err()
}

// Check validates rows: names (unique, no path separators or dots only),
// profiles, containers, sizes, EK lists and key files.
func Check(path string, vms []VM) error {
	seen := map[string]int{}
	disks := map[string]int{}
	for _, vm := range vms {
		at := fmt.Sprintf("%s: line %d", path, vm.Line)
		switch {
		case vm.Name == "":
			return fmt.Errorf("%s: no name", at)
		case !validName.MatchString(vm.Name) || reserved[vm.Name]:
			return fmt.Errorf("%s: invalid name %q (letters, digits, '.', '_' and '-', not starting with '.' or '-'; no path separators)", at, vm.Name)
		}
		if l, dup := seen[vm.Name]; dup {
			return fmt.Errorf("%s: name %q already used on line %d", at, vm.Name, l)
		}
		seen[vm.Name] = vm.Line
		if vm.Profile != "" {
			if _, err := nv.Get(vm.Profile); err != nil {
				return fmt.Errorf("%s: %v", at, err)
			}
		}
		if vm.Container != "" {
			if _, err := container.Get(vm.Container); err != nil {
				return fmt.Errorf("%s: %v", at, err)
			}
		}
		if vm.Size != "" {
			if _, err := container.ParseSize(vm.Size); err != nil {
				return fmt.Errorf("%s: size: %v", at, err)
			}
		}
		if vm.EK != "" {
			if _, err := ek.ParseAlgs(vm.EK); err != nil {
				return fmt.Errorf("%s: ek: %v", at, err)
			}
		}
		if vm.KeyFile == "-" {
			return fmt.Errorf("%s: key_file cannot be standard input", at)
		}
		if vm.KeyFile != "" {
			k, err := keyfile.Source{File: vm.KeyFile}.Load(nil)
			if err != nil {
				return fmt.Errorf("%s: key_file: %v", at, err)
			}
			keyfile.Wipe(k)
		}
		if err := checkDisk(at, vm, disks); err != nil {
			return err
		}
	}
	return nil
}

// checkDisk checks the disk and disk_key_file columns: both or neither, an
// existing disk (regular file or block device) used by one VM only, a
// regular key file.
func checkDisk(at string, vm VM, disks map[string]int) error {
	if vm.Disk == "" && vm.DiskKeyFile == "" {
		return nil
	}
	if vm.Disk == "" || vm.DiskKeyFile == "" {
		return fmt.Errorf("%s: disk and disk_key_file go together (the LUKS2 disk, and a key that unlocks it now)", at)
	}
	st, err := os.Stat(vm.Disk)
	if err != nil {
		return fmt.Errorf("%s: disk %s: %v", at, vm.Disk, atomicfile.ErrText(err))
	}
	if !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0 {
		return fmt.Errorf("%s: disk %s is not a LUKS2 image file or block device", at, vm.Disk)
	}
	id := fmt.Sprintf("%d:%d", st.Sys().(*syscall.Stat_t).Dev, st.Sys().(*syscall.Stat_t).Ino)
	if l, dup := disks[id]; dup {
		return fmt.Errorf("%s: disk %s is already enrolled by the VM on line %d", at, vm.Disk, l)
	}
	disks[id] = vm.Line
	if st, err := os.Stat(vm.DiskKeyFile); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("%s: disk_key_file %s: not a regular file", at, vm.DiskKeyFile)
	}
	return nil
}

// Generate makes count VMs named by pattern (a printf verb for 1..count).
func Generate(count int, pattern string) ([]VM, error) {
	if count <= 0 {
		return nil, fmt.Errorf("count must be positive")
	}
	if strings.Count(pattern, "%") != 1 {
		return nil, fmt.Errorf("name pattern %q needs exactly one number verb such as %%04d", pattern)
	}
	vms := make([]VM, count)
	for i := range vms {
		vms[i] = VM{Name: fmt.Sprintf(pattern, i+1), Line: i + 1}
	}
	return vms, Check("--name", vms)
}

// Shard keeps the VMs of shard i of n: those whose name hashes (FNV-1a)
// to i modulo n, so that shards do not depend on the manifest's order.
func Shard(vms []VM, i, n int) []VM {
	var out []VM
	for _, vm := range vms {
		h := fnv.New32a()
		h.Write([]byte(vm.Name))
		if int(h.Sum32()%uint32(n)) == i {
			out = append(out, vm)
		}
	}
	return out
}
