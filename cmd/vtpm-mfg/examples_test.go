package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/attest/attesttest"
)

// example is one command line from a --help text or README.md.
type example struct {
	where string // "manufacture --help", "README.md:97"
	line  string
}

// helpExamples collects the lines of the "Example:"/"Examples:" sections
// of every command's help, continuation lines joined.
func helpExamples() []example {
	var out []example
	var walk func(prefix string, cmds []*cli.Command)
	collect := func(where, text string) {
		in := false
		var cur string
		for _, l := range strings.Split(text, "\n") {
			t := strings.TrimSpace(l)
			switch {
			case t == "Example:" || t == "Examples:":
				in = true
				continue
			case t == "":
				in = false
				continue
			case !in:
				continue
			}
			cur += strings.TrimSuffix(t, "\\")
			if strings.HasSuffix(t, "\\") {
				cur += " "
				continue
			}
			out = append(out, example{where, cur})
			cur = ""
		}
	}
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	collect("vtpm-mfg --help", app.Description)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			name := strings.TrimSpace(prefix + " " + c.Name)
			collect(name+" --help", c.Description)
			walk(name, c.Subcommands)
		}
	}
	walk("", app.Commands)
	return out
}

// readmeExamples collects the vtpm-mfg lines of README.md's indented code
// blocks.
func readmeExamples(t *testing.T) []example {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []example
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if !strings.HasPrefix(l, "    ") || !strings.Contains(l, "vtpm-mfg ") {
			continue
		}
		start := i + 1
		cur := strings.TrimSpace(l)
		for strings.HasSuffix(cur, "\\") && i+1 < len(lines) {
			i++
			cur = strings.TrimSuffix(cur, "\\") + " " + strings.TrimSpace(lines[i])
		}
		out = append(out, example{"README.md:" + strconv.Itoa(start), cur})
	}
	return out
}

// outputFlags are the flags whose value a command writes.
var outputFlags = map[string]bool{"-o": true, "--output": true, "--out-cert": true, "--out-key": true, "--out-dir": true,
	"--cert-dir": true, "--write-raw": true, "--secret-out": true, "--token-out": true, ">": true}

var wordRE = regexp.MustCompile(`[^\s'"]+`)

// inputs are the fixture names an example reads (the files it names that
// it does not write).
func inputs(line string, fixtures map[string]string) []string {
	words := wordRE.FindAllString(line, -1)
	var in []string
	for i, w := range words {
		if i > 0 && outputFlags[words[i-1]] {
			continue
		}
		base := strings.SplitN(w, "/", 2)[0]
		for name := range fixtures {
			if ok, _ := filepath.Match(base, name); ok || base == name {
				in = append(in, name)
			}
		}
	}
	return in
}

// TestExamplesRun runs every example of every --help text and of
// README.md, as written, with a POSIX shell, in a directory that holds the
// files it names (made fresh for each), so that no example drifts from the
// code. Each must succeed; attest verify, whose example evidence comes
// from a test signer that AMD's roots do not know, must give a verdict
// (exit 0 or 1), not a usage error.
func TestExamplesRun(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no POSIX shell")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(exe, filepath.Join(bin, "vtpm-mfg")); err != nil {
		t.Fatal(err)
	}
	exs := append(helpExamples(), readmeExamples(t)...)
	fix := makeFixtures(t)
	if len(exs) < 30 {
		t.Fatalf("only %d examples found", len(exs))
	}
	for _, ex := range exs {
		if !strings.Contains(ex.line, "vtpm-mfg ") {
			continue
		}
		if strings.Contains(ex.line, "disk.img") && fix["disk.img"] == "" {
			t.Logf("%s: skipped, no cryptsetup (Debian: cryptsetup-bin): %s", ex.where, ex.line)
			continue
		}
		dir := t.TempDir()
		for _, name := range inputs(ex.line, fix) {
			if out, err := exec.Command("cp", "-a", fix[name], filepath.Join(dir, name)).CombinedOutput(); err != nil {
				t.Fatalf("%s: %s", name, out)
			}
		}
		cmd := exec.Command(sh, "-ec", ex.line)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "STATE_KEY="+os.Getenv("STATE_KEY"), "JOB_COMPLETION_INDEX=1")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		begin := time.Now()
		err := cmd.Run()
		t.Logf("%s: %.1f s: %s", ex.where, time.Since(begin).Seconds(), ex.line)
		code := cmd.ProcessState.ExitCode()
		ok := err == nil
		if strings.Contains(ex.line, "attest verify") {
			ok = code == 0 || code == 1
		}
		if !ok {
			t.Errorf("%s: %s\nexit %d:\n%s", ex.where, ex.line, code, out.String())
		}
	}
}

// makeFixtures makes, once, every input file the examples name.
func makeFixtures(t *testing.T) map[string]string {
	dir := t.TempDir()
	t.Chdir(dir)
	in := func(args ...string) {
		t.Helper()
		var o, e bytes.Buffer
		if code := run(append([]string{"vtpm-mfg"}, args...), strings.NewReader(""), &o, &e); code != 0 {
			t.Fatalf("%v: %s", args, e.String())
		}
	}
	in("key", "generate", "-o", "state.key")
	in("key", "generate", "-o", "new.key")
	in("ca", "init", "--out-cert", "ca.pem", "--out-key", "ca.key")
	in("manufacture", "--profile", "svsm-2026", "--key-file", "state.key", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "state.img", "--cert-dir", "certs",
		"--iak", "ecc-p256", "--idevid", "ecc-p256", "--device-serial", "vm-0001")
	in("unpack", "--state", "state.img", "--key-file", "state.key", "-o", "NVChip")
	in("nv", "new", "--profile", "svsm-2026", "-o", "NVChip.2026")
	der, err := exec.Command("openssl", "x509", "-in", "certs/ek-rsa2048.crt.pem", "-outform", "DER").Output()
	if err != nil {
		// Without openssl: the PEM, which install-ekcert reads as well.
		der, _ = os.ReadFile("certs/ek-rsa2048.crt.pem")
	}
	os.WriteFile("ek-rsa.der", der, 0o644)
	os.WriteFile("admin-token", []byte("token\n"), 0o600)
	os.WriteFile("vms.csv", []byte("name,profile\nweb-1,svsm-poc\ndb-1,svsm-2026\n"), 0o644)
	in("batch", "--count", "2", "--out-dir", "fleet", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "--jobs", "2")
	in("batch", "--count", "2", "--name", "vm-s%d", "--out-dir", "shard-0", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "--jobs", "2")
	in("attest", "manifest", "--state", "state.img", "--key-file", "state.key", "-o", "manifest.bin")
	// Evidence for attest verify: a report over this image's manifest,
	// signed by a test AMD chain.
	nonce := make([]byte, 64)
	rand.Read(nonce)
	os.WriteFile("nonce.bin", nonce, 0o644)
	m, _ := os.ReadFile("manifest.bin")
	s, err := attesttest.New("Milan-B0")
	if err != nil {
		t.Fatal(err)
	}
	rd := sha512.Sum512(append(append([]byte(nil), nonce...), m...))
	rep, err := s.Sign(attesttest.Report{ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile("report.bin", rep, 0o644)
	table, _ := s.CertTable()
	os.WriteFile("certs.bin", table, 0o644)
	os.WriteFile("vcek.der", s.VCEK(), 0o644)
	// A LUKS2 disk, unlocked by disk.key, that already holds a token of
	// this vTPM (for luks check), and the OS vendor's PCR signing key.
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	os.WriteFile("vendor-pcr.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	if _, err := exec.LookPath("cryptsetup"); err == nil {
		dk := make([]byte, 32)
		rand.Read(dk)
		os.WriteFile("disk.key", dk, 0o600)
		os.WriteFile("disk.img", make([]byte, 20<<20), 0o600)
		if out, err := exec.Command("cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
			"--pbkdf-force-iterations", "1000", "--key-file", "disk.key", "disk.img").CombinedOutput(); err != nil {
			t.Fatalf("cryptsetup luksFormat: %v: %s", err, out)
		}
		in("luks", "enroll", "--state", "state.img", "--key-file", "state.key", "--disk", "disk.img", "--disk-key-file", "disk.key", "--tpm2-public-key", "vendor-pcr.pem")
	}
	key, _ := os.ReadFile("state.key")
	os.Setenv("STATE_KEY", hex.EncodeToString(key))
	fix := map[string]string{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fix[e.Name()] = filepath.Join(dir, e.Name())
	}
	return fix
}
