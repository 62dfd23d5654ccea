package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/attest"
	"github.com/vtpm-mfg/vtpm-mfg/internal/attest/attesttest"
)

type cliRun func(args ...string) (int, string, string)

func cliIn(t *testing.T) cliRun {
	return func(args ...string) (int, string, string) {
		var o, e bytes.Buffer
		code := run(append([]string{"vtpm-mfg"}, args...), strings.NewReader(""), &o, &e)
		return code, o.String(), e.String()
	}
}

func mustRun(t *testing.T, in cliRun, args ...string) string {
	t.Helper()
	code, out, errs := in(args...)
	if code != 0 {
		t.Fatalf("%v: exit %d: %s%s", args, code, out, errs)
	}
	return out
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sha512Hex(b []byte) string {
	s := sha512.Sum512(b)
	return hex.EncodeToString(s[:])
}

// evidence writes what a guest reads from configfs-tsm for a manifest,
// signed by the test chain: nonce.bin, manifest.bin, report.bin,
// certs.bin (and vcek.pem, amd-roots.pem).
func evidence(t *testing.T, s *attesttest.Signer, manifest []byte, r attesttest.Report) {
	t.Helper()
	nonce := make([]byte, 64)
	rand.Read(nonce)
	// Computed here, independently of package attest.
	r.ReportData = sha512.Sum512(append(append([]byte(nil), nonce...), manifest...))
	raw, err := s.Sign(r)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := s.CertTable()
	if err != nil {
		t.Fatal(err)
	}
	write(t, "nonce.bin", nonce)
	write(t, "manifest.bin", manifest)
	write(t, "report.bin", raw)
	write(t, "certs.bin", ct)
	write(t, "vcek.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.VCEK()}))
	write(t, "amd-roots.pem", s.RootsPEM())
}

// The manifest predicted for a manufactured svsm-2026 image, and reports
// over it (signed with go-sev-guest's test chain) accepted or refused by
// attest verify, for an image, an EK certificate and a fleet.
func TestAttest(t *testing.T) {
	t.Chdir(t.TempDir())
	in := cliIn(t)
	mustRun(t, in, "key", "generate", "-o", "state.key")
	mustRun(t, in, "ca", "init", "--out-cert", "ca.pem", "--out-key", "ca.key")
	var m struct {
		SHA string `json:"attestation_manifest_sha512"`
	}
	out := mustRun(t, in, "manufacture", "--profile", "svsm-2026", "--key-file", "state.key", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "state.img", "--cert-dir", "certs", "--json")
	if err := json.Unmarshal([]byte(out), &m); err != nil || len(m.SHA) != 128 {
		t.Fatalf("manufacture --json: %v %q", err, out)
	}
	mustRun(t, in, "attest", "manifest", "--state", "state.img", "--key-file", "state.key", "-o", "vtpm.bin")
	vtpm := read(t, "vtpm.bin")
	if len(vtpm) != 314 || sha512Hex(vtpm) != m.SHA {
		t.Fatalf("manifest %d bytes, SHA-512 %s, manufacture said %s", len(vtpm), sha512Hex(vtpm), m.SHA)
	}
	mustRun(t, in, "ek", "public", "--state", "state.img", "--key-file", "state.key", "--alg", "rsa2048", "--format", "tpm2b", "-o", "ek.tpm2b")
	if tb := read(t, "ek.tpm2b"); !bytes.Equal(tb[2:], vtpm) || int(binary.BigEndian.Uint16(tb)) != len(vtpm) {
		t.Error("the manifest is not ek public --format tpm2b without its size")
	}
	var insp struct {
		TPM struct {
			SHA string `json:"attestation_manifest_sha512"`
		} `json:"tpm"`
	}
	json.Unmarshal([]byte(mustRun(t, in, "inspect", "--state", "state.img", "--key-file", "state.key", "--json")), &insp)
	if insp.TPM.SHA != m.SHA {
		t.Errorf("inspect --json: %q", insp.TPM.SHA)
	}
	if !strings.Contains(mustRun(t, in, "inspect", "--state", "state.img", "--key-file", "state.key"), m.SHA) {
		t.Error("inspect does not show the manifest's SHA-512")
	}
	if o := mustRun(t, in, "attest", "manifest", "--state", "state.img", "--key-file", "state.key"); !strings.HasPrefix(o, m.SHA+" ") {
		t.Errorf("attest manifest prints %q", o)
	}

	// The proof-of-concept SVSM has no attestation protocol.
	mustRun(t, in, "manufacture", "--key-file", "state.key", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "poc.img")
	if code, _, e := in("attest", "manifest", "--state", "poc.img", "--key-file", "state.key", "-o", "poc-manifest.bin"); code != 1 || !strings.Contains(e, "no attestation protocol") {
		t.Errorf("svsm-poc: exit %d: %s", code, e)
	}
	if _, err := os.Stat("poc-manifest.bin"); err == nil {
		t.Error("a manifest was written for svsm-poc")
	}
	if o := mustRun(t, in, "inspect", "--state", "poc.img", "--key-file", "state.key", "--json"); strings.Contains(o, "attestation_manifest_sha512") {
		t.Error("svsm-poc inspect shows an attestation manifest")
	}

	s, err := attesttest.New("Milan-B0")
	if err != nil {
		t.Fatal(err)
	}
	// Another TPM, for its manifest.
	mustRun(t, in, "manufacture", "--profile", "svsm-2026", "--key-file", "state.key", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "other.img")
	mustRun(t, in, "attest", "manifest", "--state", "other.img", "--key-file", "state.key", "-o", "other.bin")
	other := read(t, "other.bin")

	base := []string{"attest", "verify", "--report", "report.bin", "--nonce", "nonce.bin", "--manifest", "manifest.bin", "--amd-roots", "amd-roots.pem"}
	byImage := append(append([]string(nil), base...), "--certs", "certs.bin", "--state", "state.img", "--key-file", "state.key")
	// Refusals do not depend on where the expected EK comes from: the
	// certificate is quicker than deriving the EK from the image.
	byCert := append(append([]string(nil), base...), "--certs", "certs.bin", "--ek-cert", "certs/ek-rsa2048.crt.pem")
	meas := strings.Repeat("5a", 48)
	for _, c := range []struct {
		name     string
		manifest []byte
		report   attesttest.Report
		tamper   func()
		args     []string
		fail     string // "" accepted, else the failed checks' lines
	}{
		{name: "accepted", manifest: vtpm, report: attesttest.Report{Measurement: bytes.Repeat([]byte{0x5a}, 48)}, args: append(byImage, "--measurement", meas)},
		{name: "EK certificate", manifest: vtpm, args: append(append([]string(nil), base...), "--certs", "certs.bin", "--ek-cert", "certs/ek-rsa2048.crt.pem")},
		{name: "VCEK file", manifest: vtpm, args: append(append([]string(nil), base...), "--vcek", "vcek.pem", "--state", "state.img", "--key-file", "state.key")},
		{name: "services table", manifest: attest.BuildServices([]attest.Service{{GUID: attest.VTPMGUID, Data: vtpm}, {GUID: attest.UEFIMMGUID, Data: []byte("uefi")}}), args: byImage},
		{name: "policy flags", manifest: vtpm, report: attesttest.Report{ReportedTCB: 0x4405000000000002, ReportID: bytes.Repeat([]byte{0xab}, 32)},
			args: append(append([]string(nil), byCert...), "--min-tcb", "bl=2,tee=0,snp=5,ucode=68", "--policy", "0x30000", "--report-id", strings.Repeat("ab", 32), "--chip-id", strings.Repeat("00", 64))},
		{name: "TCB below the minimum", manifest: vtpm, report: attesttest.Report{ReportedTCB: 0x4405000000000002},
			args: append(append([]string(nil), byCert...), "--min-tcb", "bl=2,tee=0,snp=5,ucode=69"), fail: "tcb"},
		{name: "raw TCB below the minimum", manifest: vtpm, report: attesttest.Report{ReportedTCB: 0x4405000000000002},
			args: append(append([]string(nil), byCert...), "--min-tcb", "0x4406000000000002"), fail: "tcb"},
		{name: "another policy", manifest: vtpm, args: append(append([]string(nil), byCert...), "--policy", "0x70000"), fail: "policy"},
		{name: "flipped report byte", manifest: vtpm, tamper: func() { flip(t, "report.bin", 0x90) }, args: byCert, fail: "signature"},
		{name: "another nonce", manifest: vtpm, tamper: func() { write(t, "nonce.bin", bytes.Repeat([]byte{1}, 64)) }, args: byCert, fail: "report-data"},
		{name: "another TPM's manifest", manifest: other, args: byCert, fail: "manifest"},
		{name: "TPM2B size left on", manifest: append([]byte{0x01, 0x3a}, vtpm...), args: byCert, fail: "manifest"},
		{name: "VMPL 1", manifest: vtpm, report: attesttest.Report{VMPL: 1}, args: byCert, fail: "vmpl"},
		{name: "debug policy", manifest: vtpm, report: attesttest.Report{Policy: 0xb0000}, args: byCert, fail: "debug"},
		{name: "measurement mismatch", manifest: vtpm, args: append(byCert, "--measurement", meas), fail: "measurement"},
		{name: "truncated report", manifest: vtpm, tamper: func() { write(t, "report.bin", read(t, "report.bin")[:1183]) }, args: byCert, fail: "report"},
		{name: "not the EK certificate's TPM", manifest: other, args: append(append([]string(nil), base...), "--certs", "certs.bin", "--ek-cert", "certs/ek-rsa2048.crt.pem"), fail: "manifest"},
		{name: "AMD's roots do not trust the test chain", manifest: vtpm, args: []string{"attest", "verify", "--report", "report.bin", "--nonce", "nonce.bin", "--manifest", "manifest.bin", "--certs", "certs.bin", "--state", "state.img", "--key-file", "state.key"}, fail: "signature"},
	} {
		t.Run(c.name, func(t *testing.T) {
			evidence(t, s, c.manifest, c.report)
			if c.tamper != nil {
				c.tamper()
			}
			before := snapshotDir(t)
			code, out, errs := in(c.args...)
			if c.fail == "" {
				if code != 0 || !strings.HasPrefix(out, "OK: the vTPM is ") {
					t.Fatalf("exit %d: %s%s", code, out, errs)
				}
			} else {
				lines := strings.Split(strings.TrimSpace(out), "\n")
				if code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "FAIL "+c.fail+": ") {
					t.Fatalf("exit %d, want 1 with one line FAIL %s: %s%s", code, c.fail, out, errs)
				}
			}
			if !bytes.Equal(before, snapshotDir(t)) {
				t.Error("attest verify changed files")
			}
		})
	}

	// --json lists every check.
	evidence(t, s, vtpm, attesttest.Report{})
	var res attest.Result
	if err := json.Unmarshal([]byte(mustRun(t, in, append(byImage, "--json")...)), &res); err != nil || !res.Accepted || res.VTPM != "state.img" || len(res.Checks) < 8 {
		t.Errorf("--json: %v %+v", err, res)
	}
	flip(t, "report.bin", 0x90)
	code, out, _ := in(append(byImage, "--json")...)
	if err := json.Unmarshal([]byte(out), &res); code != 1 || err != nil || res.Accepted || len(res.Failed()) != 1 || res.Failed()[0].Name != "signature" {
		t.Errorf("--json refused: exit %d %v %+v", code, err, res)
	}

	// A fleet: the tool says which VM.
	mustRun(t, in, "batch", "--count", "2", "--profile", "svsm-2026", "--out-dir", "fleet", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "--jobs", "2")
	mustRun(t, in, "attest", "manifest", "--state", "fleet/vm-0001/state.img", "--key-file", "fleet/vm-0001/state.key", "-o", "vm1.bin")
	vm1 := read(t, "vm1.bin")
	for _, f := range []string{"fleet/fleet.jsonl", "fleet/register/inventory.csv", "fleet/vm-0001/manifest.json"} {
		if !bytes.Contains(read(t, f), []byte(sha512Hex(vm1))) {
			t.Errorf("%s does not carry vm-0001's manifest SHA-512", f)
		}
	}
	evidence(t, s, vm1, attesttest.Report{})
	fleetArgs := append(append([]string(nil), base...), "--certs", "certs.bin", "--fleet", "fleet")
	if o := mustRun(t, in, fleetArgs...); !strings.Contains(o, "VM vm-0001 of fleet fleet") {
		t.Errorf("fleet: %s", o)
	}
	evidence(t, s, vtpm, attesttest.Report{})
	if code, o, _ := in(fleetArgs...); code != 1 || !strings.Contains(o, "FAIL manifest: ") || !strings.Contains(o, "any of the 2 expected vTPMs") {
		t.Errorf("not in the fleet: exit %d %s", code, o)
	}
	// batch verify checks the recorded manifest SHA-512 against the image.
	mustRun(t, in, "batch", "verify", "fleet", "--ca-cert", "ca.pem")
	mj := filepath.Join("fleet", "vm-0002", "manifest.json")
	b := read(t, mj)
	var vm2 struct {
		SHA string `json:"attestation_manifest_sha512"`
	}
	json.Unmarshal(b, &vm2)
	write(t, mj, bytes.ReplaceAll(b, []byte(vm2.SHA), []byte(sha512Hex(vm1))))
	if code, o, e := in("batch", "verify", "fleet", "--ca-cert", "ca.pem"); code != 1 || !strings.Contains(o+e, "attestation_manifest_sha512 is not the SHA-512 of this image's vTPM manifest") {
		t.Errorf("batch verify with a wrong manifest SHA-512: exit %d %s%s", code, o, e)
	}
}

func flip(t *testing.T, p string, off int) {
	b := read(t, p)
	b[off] ^= 0xff
	write(t, p, b)
}

// snapshotDir hashes the names and contents of the regular files of the
// working directory.
func snapshotDir(t *testing.T) []byte {
	h := sha512.New()
	ents, _ := os.ReadDir(".")
	for _, e := range ents {
		if e.Type().IsRegular() {
			h.Write([]byte(e.Name()))
			h.Write(read(t, e.Name()))
		}
	}
	return h.Sum(nil)
}

// Usage errors name the flag and change nothing.
func TestAttestUsage(t *testing.T) {
	t.Chdir(t.TempDir())
	in := cliIn(t)
	for _, f := range []string{"r", "n", "m"} {
		write(t, f, []byte("x"))
	}
	ev := []string{"attest", "verify", "--report", "r", "--nonce", "n", "--manifest", "m"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"attest", "verify", "--nonce", "n", "--manifest", "m", "--ek-cert", "c"}, "--report"},
		{[]string{"attest", "verify", "--report", "r", "--manifest", "m", "--ek-cert", "c"}, "--nonce"},
		{append(ev, "--ek-cert", "c", "--measurement", "abcd"), "--measurement"},
		{append(ev, "--ek-cert", "c", "--chip-id", "zz"), "--chip-id"},
		{append(ev, "--ek-cert", "c", "--report-id", strings.Repeat("0", 63)), "--report-id"},
		{append(ev, "--ek-cert", "c", "--min-tcb", "bl=300"), "--min-tcb"},
		{append(ev, "--ek-cert", "c", "--min-tcb", "fmc=1"), "--min-tcb"},
		{append(ev, "--ek-cert", "c", "--policy", "debug"), "--policy"},
		{append(ev, "--ek-cert", "c", "--policy", "0x10000"), "--policy"},
		{append(ev, "--certs", "a", "--vcek", "b", "--ek-cert", "c"), "--certs FILE or --vcek FILE"},
		{ev, "exactly one of --state"},
		{append(ev, "--ek-cert", "c", "--fleet", "d"), "exactly one of --state"},
		{append(ev, "--ek-cert", "c", "--key-file", "k"), "--key-file"},
		{[]string{"attest", "manifest", "--nvchip", "n", "-o", "-"}, "--output -"},
	} {
		code, _, e := in(c.args...)
		if code != 2 || !strings.Contains(e, c.want) {
			t.Errorf("%v: exit %d, want 2 naming %q: %s", c.args, code, c.want, e)
		}
	}
	if _, err := os.Stat("-"); err == nil {
		t.Error("a file named - was written")
	}
	// Inputs that are not regular files are refused, not read.
	os.Mkdir("dir", 0o755)
	if code, _, e := in(append([]string{"attest", "verify", "--report", "dir", "--nonce", "n", "--manifest", "m"}, "--ek-cert", "r")...); code != 1 || !strings.Contains(e, "dir: is a directory, not an attestation report; pass a regular file") {
		t.Errorf("directory as report: exit %d %s", code, e)
	}
}

// The examples of attest --help run as written (in a directory holding
// the files they name): manifest's succeed, verify's run to a verdict
// (the test chain is refused by AMD's roots), none is a usage error.
func TestAttestHelpExamples(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	in := cliIn(t)
	mustRun(t, in, "key", "generate", "-o", "state.key")
	mustRun(t, in, "ca", "init", "--out-cert", "ca.pem", "--out-key", "ca.key")
	mustRun(t, in, "manufacture", "--profile", "svsm-2026", "--key-file", "state.key", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "state.img", "--cert-dir", "certs")
	mustRun(t, in, "batch", "--count", "1", "--profile", "svsm-2026", "--out-dir", "fleet", "--ca-cert", "ca.pem", "--ca-key", "ca.key")
	mustRun(t, in, "attest", "manifest", "--state", "state.img", "--key-file", "state.key", "-o", "vtpm.bin")
	s, err := attesttest.New("Milan-B0")
	if err != nil {
		t.Fatal(err)
	}
	evidence(t, s, read(t, "vtpm.bin"), attesttest.Report{})
	write(t, "vcek.der", s.VCEK())
	app := newApp(nil, nil, nil)
	for _, sub := range []string{"manifest", "verify"} {
		var desc string
		for _, c := range app.Commands {
			if c.Name == "attest" {
				for _, sc := range c.Subcommands {
					if sc.Name == sub {
						desc = sc.Description
					}
				}
			}
		}
		_, ex, ok := strings.Cut(desc, "Examples:\n")
		if !ok {
			t.Fatalf("attest %s --help has no examples", sub)
		}
		ex = strings.ReplaceAll(ex, "\\\n", " ")
		n := 0
		for _, line := range strings.Split(ex, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "vtpm-mfg" {
				continue
			}
			n++
			code, out, errs := in(f[1:]...)
			switch {
			case sub == "manifest" && code != 0, sub == "verify" && (code != 1 || !strings.Contains(out, "signature")):
				t.Errorf("%s: exit %d: %s%s", line, code, out, errs)
			}
		}
		if n == 0 {
			t.Errorf("attest %s: no example found", sub)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "vtpm-manifest.bin")); err != nil {
		t.Error(err)
	}
}
