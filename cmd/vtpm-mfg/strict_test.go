package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	} {
		before := snapshot()
		code, _, stderr := in(c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) || (c.not != "" && strings.Contains(stderr, c.not)) {
			t.Errorf("%v: exit %d, want %d; stderr %q (want %q)", c.args, code, c.code, stderr, c.want)
		}
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
