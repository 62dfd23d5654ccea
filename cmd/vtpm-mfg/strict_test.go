package main

import (
	"io"
	"regexp"

	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// Strict input: each case exits with the right code, says what is wrong
// (naming the flag for usage errors), never echoes key material, and
// leaves every input byte for byte as it was.
func TestStrictInput(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	in := func(args ...string) (int, string, string) {
		var o, e bytes.Buffer
		code := run(append([]string{"vtpm-mfg"}, args...), strings.NewReader(""), &o, &e)
		return code, o.String(), e.String()
	}
	if c, _, e := in("key", "generate", "-o", "k"); c != 0 {
		t.Fatal(e)
	}
	in("key", "generate", "-o", "k2")
	in("ca", "init", "--out-cert", "ca.pem", "--out-key", "ca.key")
	if c, _, e := in("manufacture", "--profile", "svsm-2026", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "s.img"); c != 0 {
		t.Fatal(e)
	}
	junk := make([]byte, 16384)
	rand.Read(junk)
	os.WriteFile("junk.nv", junk, 0o600)
	hexKey := strings.Repeat("ab", 64)
	snapshot := func() map[string][]byte {
		m := map[string][]byte{}
		ents, _ := os.ReadDir(".")
		for _, e := range ents {
			b, _ := os.ReadFile(e.Name())
			m[e.Name()] = b
		}
		return m
	}
	for _, c := range []struct {
		args []string
		code int
		want string // in stderr
		not  string // never in stderr
	}{
		{nil, 2, "no command given", ""},
		{[]string{"inspect", "--state", "s.img", "--key-file", "k", "--profile", "svsm-1999"}, 2, "--profile: unknown TPM profile", ""},
		{[]string{"verify", "--state", "s.img", "--key-file", "k", "--ca-cert", "ca.pem", "--profile", "nope"}, 2, "--profile", ""},
		{[]string{"manufacture", "--profile", "nope", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img"}, 2, "--profile", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--size", "16 Mb"}, 2, "--size", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--size", "0"}, 2, "--size", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--size", "2T"}, 2, "out of range", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--not-before", "2030-01-01T00:00:00Z", "--not-after", "2029-01-01T00:00:00Z"}, 2, "--not-after 2029-01-01T00:00:00Z is not after --not-before 2030-01-01T00:00:00Z", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--not-after", "2001-01-01T00:00:00Z"}, 2, "--not-after 2001-01-01T00:00:00Z is not in the future", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "pkcs11:token=t;object=o?pin-value=123456", "-o", "x.img"}, 2, "pin-source", "123456"},
		{[]string{"inspect", "--state", "s.img", "--key-env", hexKey}, 2, "--key-env takes the NAME of an environment variable", hexKey},
		{[]string{"inspect", "--state", "s.img", "--key-file", hexKey}, 2, "--key-file takes the path of a file", hexKey},
		{[]string{"rotate-key", "--state", "s.img", "--key-file", "-", "--new-key-file", "-"}, 2, "only one key can be read from standard input", ""},
		{[]string{"key", "generate", "-o", "k"}, 1, "file exists (use --force", ""},
		{[]string{"key", "generate", "-o", "-"}, 2, "--output -", ""},
		{[]string{"unpack", "--state", "s.img", "--key-file", "k", "-o", "-"}, 2, "--output -", ""},
		{[]string{"pack", "--nvchip", "junk.nv", "--key-file", "k", "-o", "x.img"}, 1, "fits no known TPM profile", ""},
		{[]string{"manufacture", "--profile", "svsm-2026", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--size", "8388609"}, 2, "--size 8388609: 8388609 bytes is not a whole number of 512-byte blocks for a cocoonfs image; give a multiple of 512, e.g. 8388608", ""},
		{[]string{"manufacture", "--profile", "svsm-2026", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--size", "1T"}, 2, "--size 1T: 1099511627776 bytes is above the largest cocoonfs image this tool writes", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--size", "1025M"}, 2, "--size 1025M: 1074790400 bytes is above the largest blockfs image this tool writes (1073741824 bytes)", ""},
		{[]string{"manufacture", "--profile", "svsm-2026", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--size", "32K"}, 2, "--size 32K: 32768 bytes is below the minimum", ""},
		{[]string{"pack", "--nvchip", "junk.nv", "--key-file", "k", "-o", "x.img", "--force", "--size", "16897"}, 2, "pack: --size 16897: 16897 bytes is not a whole number of 512-byte blocks", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--cocoonfs-strength", "256"}, 2, "--cocoonfs-strength applies to CocoonFS images only, and this image is blockfs", ""},
		{[]string{"manufacture", "--profile", "svsm-2026", "--container", "blockfs", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--cocoonfs-zero-free"}, 2, "--cocoonfs-zero-free applies to CocoonFS images only", ""},
		{[]string{"pack", "--nvchip", "junk.nv", "--key-file", "k", "-o", "x.img", "--force", "--cocoonfs-zero-free"}, 2, "--cocoonfs-zero-free applies to CocoonFS images only", ""},
		{[]string{"batch", "--count", "2", "--out-dir", "fleet", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "--cocoonfs-strength", "192"}, 2, "--cocoonfs-strength applies to CocoonFS images only", ""},
		{[]string{"batch", "--count", "2", "--out-dir", "fleet", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "--size", "1000"}, 2, "--size: 1000 bytes is below the minimum", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--ek", "L-1,H-3", "--persist", "H-3"}, 2, "--persist: H-3 (ecc-p384): TCG Provisioning Guidance assigns no persistent handle", ""},
		{[]string{"manufacture", "--key-file", "k", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.img", "--ek", "L-9"}, 2, "--ek: unknown EK type", ""},
		{[]string{"manufacture", "--format", "nvchip", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.nv", "--size", "8M"}, 2, "--size applies to state images, and --format nvchip writes a raw NVChip", ""},
		{[]string{"manufacture", "--format", "nvchip", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "-o", "x.nv", "--cocoonfs-strength", "256"}, 2, "--cocoonfs-strength applies to state images", ""},
	} {
		before := snapshot()
		code, _, stderr := in(c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) || (c.not != "" && strings.Contains(stderr, c.not)) {
			t.Errorf("%v: exit %d, want %d; stderr %q (want %q)", c.args, code, c.code, stderr, c.want)
		}
		checkFlagsNamed(t, c.args, stderr)
		after := snapshot()
		if len(after) != len(before) {
			t.Errorf("%v: files changed: %d -> %d", c.args, len(before), len(after))
		}
		for name, b := range before {
			if !bytes.Equal(after[name], b) {
				t.Errorf("%v: %s changed", c.args, name)
			}
		}
	}
	// --force packs an unknown NVChip on purpose; key generate --force replaces.
	if code, _, e := in("pack", "--nvchip", "junk.nv", "--key-file", "k", "-o", "x.img", "--force"); code != 0 {
		t.Errorf("pack --force: %s", e)
	}
	if code, _, e := in("key", "generate", "-o", "k2", "--force"); code != 0 {
		t.Errorf("key generate --force: %s", e)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.img")); err != nil {
		t.Error(err)
	}
}

// -o - writes text to standard output where the output is text.
func TestOutputDashIsStdout(t *testing.T) {
	t.Chdir(t.TempDir())
	var o, e bytes.Buffer
	run([]string{"vtpm-mfg", "nv", "new", "--profile", "svsm-2026", "-o", "nv"}, strings.NewReader(""), &o, &e)
	o.Reset()
	if code := run([]string{"vtpm-mfg", "ek", "public", "--nvchip", "nv", "--alg", "ecc-p256", "-o", "-"}, strings.NewReader(""), &o, &e); code != 0 || !strings.HasPrefix(o.String(), "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("exit %d: %q %q", code, o.String(), e.String())
	}
	if _, err := os.Stat("-"); err == nil {
		t.Error("a file named - was written")
	}
}

var flagRE = regexp.MustCompile(`(^|[\s("'])(--[a-z][a-z0-9-]*)`)

// checkFlagsNamed fails if a message suggests a flag the command does not
// have.
func checkFlagsNamed(t *testing.T, args []string, msg string) {
	t.Helper()
	if bad := foreignFlags(args, msg); len(bad) > 0 {
		t.Errorf("%v: the message names %v, which the command does not have: %q", args, bad, msg)
	}
}

// foreignFlags lists the flags msg names that the command args run does
// not have.
func foreignFlags(args []string, msg string) []string {
	cmd := findCommand(args)
	if cmd == nil {
		return nil
	}
	have := map[string]bool{"--help": true}
	for _, f := range cmd.Flags {
		for _, n := range f.Names() {
			have["--"+n] = true
		}
	}
	var bad []string
	for _, m := range flagRE.FindAllStringSubmatch(msg, -1) {
		if !have[m[2]] {
			bad = append(bad, m[2])
		}
	}
	return bad
}

// findCommand is the (sub)command args run.
func findCommand(args []string) *cli.Command {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	var cmd *cli.Command
	cmds := app.Commands
	for _, a := range args {
		var next *cli.Command
		for _, c := range cmds {
			if c.Name == a {
				next = c
			}
		}
		if next == nil {
			break
		}
		cmd, cmds = next, next.Subcommands
	}
	return cmd
}

// The walk itself finds a flag its command lacks.
func TestForeignFlags(t *testing.T) {
	if bad := foreignFlags([]string{"pack", "--nvchip", "x"}, "x: fits no profile (use --profile svsm-2026)"); len(bad) != 1 || bad[0] != "--profile" {
		t.Errorf("pack --profile not found: %v", bad)
	}
	if bad := foreignFlags([]string{"inspect"}, "give --profile svsm-2026 or --state"); len(bad) != 0 {
		t.Errorf("inspect: %v", bad)
	}
	if bad := foreignFlags([]string{"batch", "verify", "fleet"}, "x (--ca-cert, --jobs, --kbs-path)"); len(bad) != 1 || bad[0] != "--kbs-path" {
		t.Errorf("batch verify: %v", bad)
	}
}
