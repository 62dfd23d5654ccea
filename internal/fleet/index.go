package fleet

import (
	"bytes"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/kbs"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
)

// DefaultKBSPath is the key broker resource path template.
const DefaultKBSPath = "default/{name}/state-key"

// FleetLine is one line of fleet.jsonl.
type FleetLine struct {
	Name      string            `json:"name"`
	Directory string            `json:"directory"`
	Profile   string            `json:"profile"`
	Container string            `json:"container"`
	EKs       map[string]string `json:"ek_fingerprints"`
	Serials   map[string]string `json:"certificate_serials"`
	// AttestationManifestSHA512 is the SHA-512 of the VM's vTPM
	// manifest (pipeline.Manifest), for attest verify --fleet.
	AttestationManifestSHA512 string `json:"attestation_manifest_sha512,omitempty"`
	// Device identity keys: kind (iak, idevid) -> fingerprint.
	DeviceSerial string            `json:"device_serial,omitempty"`
	DevIDs       map[string]string `json:"device_identity_fingerprints,omitempty"`
}

// WriteIndex rebuilds fleet.jsonl and the registration bundle in
// register/ from every complete VM directory in dir (so that the
// directories of several shards, copied together, index as one fleet).
//
// The kbs-client lines of register/kbs-commands.sh name adminToken as the
// broker's admin token file, or the script's KBS_ADMIN_TOKEN when it is
// empty.
func WriteIndex(dir string, ca *x509.Certificate, chain []*x509.Certificate, kbsPath, adminToken string) error {
	if kbsPath == "" {
		kbsPath = DefaultKBSPath
	}
	names, err := VMDirs(dir)
	if err != nil {
		return err
	}
	var fleet, kbsList, sh bytes.Buffer
	var inv bytes.Buffer
	cw := csv.NewWriter(&inv)
	cw.Write([]string{"name", "profile", "container", "alg", "ek_fingerprint", "certificate_serial", "nv_index", "device_serial", "iak_fingerprint", "idevid_fingerprint", "attestation_manifest_sha512"})
	var devids []vmDevIDs
	sh.WriteString(scriptHead(adminToken))
	for _, n := range names {
		vdir := filepath.Join(dir, n)
		rec, m, err := readRecord(vdir)
		if err != nil {
			return err
		}
		fl := FleetLine{Name: n, Directory: n, Profile: m.Profile, Container: m.Container, EKs: map[string]string{}, Serials: map[string]string{}, AttestationManifestSHA512: m.AttestationManifestSHA512}
		dv := devIDColumns(n, m)
		fl.DeviceSerial, fl.DevIDs = dv.serial, dv.fingerprints
		devids = append(devids, dv)
		for _, e := range m.EKs {
			fl.EKs[e.Alg], fl.Serials[e.Alg] = e.KeySHA256, e.Serial
			cw.Write([]string{n, m.Profile, m.Container, e.Alg, e.KeySHA256, e.Serial, e.Index, dv.serial, dv.fingerprints["iak"], dv.fingerprints["idevid"], m.AttestationManifestSHA512})
		}
		b, _ := json.Marshal(fl)
		fleet.Write(append(b, '\n'))
		res, err := rawKeyFile(vdir, rec)
		if err != nil {
			return err
		}
		if r, err := filepath.Rel(dir, res); err == nil && !strings.HasPrefix(r, "..") {
			res = r // inside the fleet directory: relative to it
		}
		path := strings.ReplaceAll(kbsPath, "{name}", n)
		b, _ = json.Marshal(map[string]string{"name": n, "path": path, "resource_file": res})
		kbsList.Write(append(b, '\n'))
		sh.WriteString(kbs.SetResource{URL: kbs.Word{Var: kbs.URLVar}, AdminToken: kbs.Literal(adminToken, kbs.TokenVar), Path: path, ResourceFile: res}.Line() + "\n")
	}
	cw.Flush()
	reg := filepath.Join(dir, "register")
	store := filepath.Join(reg, "keylime", "tpm_cert_store")
	if err := os.MkdirAll(store, 0o755); err != nil {
		return err
	}
	put := func(p string, data []byte, mode os.FileMode) error {
		return atomicfile.Create(p, mode, true, func(f *os.File) error { _, err := f.Write(data); return err })
	}
	// Keylime checks one level: the direct issuer of the EK certificates
	// must be in the store; the rest of the chain goes along.
	for i, c := range append([]*x509.Certificate{ca}, chain...) {
		if err := put(filepath.Join(store, fmt.Sprintf("vtpm-mfg-ca-%d.pem", i)), ekcert.EncodeCert(c), 0o644); err != nil {
			return err
		}
	}
	for p, d := range map[string][]byte{
		filepath.Join(dir, "fleet.jsonl"): fleet.Bytes(), filepath.Join(reg, "kbs.jsonl"): kbsList.Bytes(),
		filepath.Join(reg, "inventory.csv"): inv.Bytes(),
	} {
		if err := put(p, d, 0o644); err != nil {
			return err
		}
	}
	if err := writeKeylimeDevID(filepath.Join(reg, "keylime"), devids, put); err != nil {
		return err
	}
	return put(filepath.Join(reg, "kbs-commands.sh"), sh.Bytes(), 0o755)
}

// rawKeyFile is the file holding a VM's raw key bytes, as key brokers
// take them: the VM's key file if it is raw, else a raw copy (0600).
func rawKeyFile(vdir string, rec *vmRecord) (string, error) {
	p := rec.keyPath(vdir)
	if st, err := os.Stat(p); err == nil && st.Size() == keyfile.Size {
		return p, nil
	}
	k, err := keyfile.Source{File: p}.Load(nil)
	if err != nil {
		return "", err
	}
	defer keyfile.Wipe(k)
	raw := filepath.Join(vdir, "state.key.raw")
	if err := atomicfile.WriteSecret(raw, k, true); err != nil {
		return "", err
	}
	return raw, nil
}

// scriptHead starts register/kbs-commands.sh: what to set, and the checks
// that it is set.
func scriptHead(adminToken string) string {
	s := `#!/bin/sh
# Registers each VM's state key with a Trustee key broker (KBS), with
# kbs-client 0.21 or later. Set first:
#   KBS_URL          the broker's root URL, e.g. https://kbs.example.com:8080
`
	if adminToken == "" {
		s += `#   KBS_ADMIN_TOKEN  the broker's admin bearer token file
#                    (default: ~/.trustee/admin-token, as kbs-client's own)
`
	}
	s += `# kbs-client before 0.21 authenticated with "config --auth-private-key
# KEY" (the admin's private key) instead of "config --admin-token-file".
set -eu
: "${KBS_URL:?set KBS_URL to the key broker's URL}"
`
	if adminToken == "" {
		s += `KBS_ADMIN_TOKEN=${KBS_ADMIN_TOKEN:-$HOME/.trustee/admin-token}
`
	}
	return s + `cd "$(dirname "$0")/.."   # key files are named relative to the fleet directory
`
}
