package fleet

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
)

// vmDevID is the device identity spec of one VM: the run's key types and
// the VM's device serial (manifest column, else the run's template with
// {name} replaced, else the VM's name).
func vmDevID(vm VM, d pipeline.DevIDSpec, p *nv.Profile) (pipeline.DevIDSpec, error) {
	if !d.Any() {
		if vm.DeviceSerial != "" {
			return d, fmt.Errorf("line %d: device_serial %q, but no --iak, --idevid or --platform-cert asks for device identity", vm.Line, vm.DeviceSerial)
		}
		return d, nil
	}
	for _, c := range []struct {
		kind ek.DevIDKind
		alg  ek.Alg
	}{{ek.IAK, d.IAK}, {ek.IDevID, d.IDevID}} {
		if c.alg != "" {
			if err := pipeline.CheckDevID(p, c.kind, c.alg); err != nil {
				return d, err
			}
		}
	}
	serial := vm.DeviceSerial
	if serial == "" {
		tmpl := d.DeviceSerial
		if tmpl == "" {
			tmpl = "{name}"
		}
		serial = strings.ReplaceAll(tmpl, "{name}", vm.Name)
	}
	if err := ekcert.CheckDeviceSerial(serial); err != nil {
		return d, fmt.Errorf("%v (give the VM a device_serial column in the manifest)", err)
	}
	d.DeviceSerial = serial
	return d, nil
}

// vmDevIDs is what the registration bundle says about a VM's device
// identity keys.
type vmDevIDs struct {
	name         string
	serial       string
	fingerprints map[string]string // kind -> public key fingerprint
	certFiles    map[string]string // kind -> certificate file in the VM directory
}

func devIDColumns(name string, m *pipeline.Manifest) vmDevIDs {
	v := vmDevIDs{name: name, fingerprints: map[string]string{}, certFiles: map[string]string{}}
	for _, d := range m.DevIDs {
		v.serial = d.DeviceSerial
		v.fingerprints[d.Kind] = d.KeySHA256
		v.certFiles[d.Kind] = d.CertFile
	}
	if len(v.fingerprints) == 0 {
		v.fingerprints = nil
	}
	return v
}

// writeKeylimeDevID writes what Keylime needs for the VMs that have
// device identity keys: a registrar configuration snippet with
// tpm_identity (iak_idevid when every VM has both keys, else
// ek_cert_or_iak_idevid), and per VM a rust-keylime agent configuration
// snippet naming the persistent handles and the certificate files. The
// CA already is in tpm_cert_store, which Keylime also uses for IAK and
// IDevID certificates.
func writeKeylimeDevID(dir string, vms []vmDevIDs, put func(string, []byte, os.FileMode) error) error {
	all, any := len(vms) > 0, false
	for _, v := range vms {
		both := v.fingerprints["iak"] != "" && v.fingerprints["idevid"] != ""
		all = all && both
		any = any || v.fingerprints != nil
	}
	if !any {
		return nil
	}
	identity := "ek_cert_or_iak_idevid"
	if all {
		identity = "iak_idevid"
	}
	reg := fmt.Sprintf(`# Keylime registrar: drop into /etc/keylime/registrar.conf.d/.
# Every VM of this fleet has an IAK and an IDevID%s; their certificates are
# issued by the CA in ../tpm_cert_store (Keylime's [tenant] tpm_cert_store).
[registrar]
tpm_identity = %s
`, map[bool]string{true: "", false: " or an EK certificate"}[all], identity)
	if err := os.MkdirAll(filepath.Join(dir, "registrar.conf.d"), 0o755); err != nil {
		return err
	}
	if err := put(filepath.Join(dir, "registrar.conf.d", "50-vtpm-mfg.conf"), []byte(reg), 0o644); err != nil {
		return err
	}
	for _, v := range vms {
		if v.fingerprints == nil {
			continue
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "# rust-keylime agent of VM %s (device serial %s): drop into\n# /etc/keylime/agent.conf.d/ in the VM, and copy the certificate files\n# named below from the fleet directory %s/ into the agent's keylime_dir.\n[agent]\nenable_iak_idevid = true\n", v.name, v.serial, v.name)
		for _, k := range []struct{ kind, handle string }{{"iak", fmt.Sprintf("0x%08X", pipeline.IAKHandle)}, {"idevid", fmt.Sprintf("0x%08X", pipeline.IDevIDHandle)}} {
			if v.fingerprints[k.kind] == "" {
				continue
			}
			fmt.Fprintf(&b, "%s_handle = %q\n%s_cert = %q\n", k.kind, k.handle, k.kind, v.certFiles[k.kind])
		}
		d := filepath.Join(dir, "agents", v.name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := put(filepath.Join(d, "50-vtpm-mfg-devid.conf"), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// recDevID is what a VM record requires of its image.
func recDevID(rec *vmRecord) pipeline.DevIDSpec {
	d := pipeline.DevIDSpec{IAK: ek.Alg(rec.IAK), IDevID: ek.Alg(rec.IDevID), DeviceSerial: rec.DeviceSerial}
	if rec.Platform {
		d.Platform = &pipeline.PlatformInfo{}
	}
	return d
}
