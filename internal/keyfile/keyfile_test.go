package keyfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseForms(t *testing.T) {
	raw := bytes.Repeat([]byte{0xA5}, 64)
	hexKey := strings.Repeat("a5", 64)
	for name, in := range map[string][]byte{
		"raw":            raw,
		"hex":            []byte(hexKey),
		"hex newline":    []byte(hexKey + "\n"),
		"HEX whitespace": []byte("  " + strings.ToUpper(hexKey) + "\r\n"),
	} {
		k, err := Parse(name, in)
		if err != nil || !bytes.Equal(k, raw) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, in := range map[string][]byte{
		"63 raw":      raw[:63],
		"65 raw":      append(raw, 1),
		"32-byte":     []byte(strings.Repeat("ab", 32)),
		"odd hex":     []byte(hexKey[:127]),
		"empty":       nil,
		"not hex":     []byte(strings.Repeat("zz", 64)),
		"hex+garbage": []byte(hexKey + "x"),
	} {
		_, err := Parse("src", in)
		if err == nil || !strings.Contains(err.Error(), "accepted forms") || !strings.HasPrefix(err.Error(), "src: ") {
			t.Errorf("%s: %v", name, err)
		}
		if err != nil && len(in) > 8 && strings.Contains(err.Error(), string(in[:8])) {
			t.Errorf("%s: error repeats key material", name)
		}
	}
}

func TestLoadSources(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	os.WriteFile(p, bytes.Repeat([]byte{1}, 64), 0o600)
	if _, err := (Source{File: p}).Load(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := (Source{File: "-"}).Load(strings.NewReader(strings.Repeat("01", 64))); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VTPM_TEST_KEY", strings.Repeat("02", 64))
	if k, err := (Source{Env: "VTPM_TEST_KEY"}).Load(nil); err != nil || k[0] != 2 {
		t.Fatal(err)
	}
	if _, err := (Source{File: p, Env: "X"}).Load(nil); err == nil {
		t.Error("both sources accepted")
	}
	if _, err := (Source{}).Load(nil); err != ErrNoSource {
		t.Error(err)
	}
	if _, err := (Source{File: dir}).Load(nil); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Error(err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 5000), 0o600)
	if _, err := (Source{File: big}).Load(nil); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Error(err)
	}
}
