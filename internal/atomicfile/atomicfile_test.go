package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func content(s string) func(*os.File) error {
	return func(f *os.File) error { _, err := f.WriteString(s); return err }
}

func TestCreateAndReplace(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Create(p, 0o600, false, content("one")); err != nil {
		t.Fatal(err)
	}
	if err := Create(p, 0o600, false, content("two")); !errors.Is(err, ErrExists) {
		t.Fatalf("overwrite without force: %v", err)
	}
	os.Chmod(p, 0o640)
	if err := Replace(p, content("three")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if string(b) != "three" || st.Mode().Perm() != 0o640 {
		t.Fatalf("%q %v", b, st.Mode())
	}
	// a failing fill leaves the target and no temporary file
	if err := Replace(p, func(*os.File) error { return errors.New("boom") }); err == nil {
		t.Fatal("no error")
	}
	if b, _ := os.ReadFile(p); string(b) != "three" {
		t.Fatal("target changed")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestLockIsExclusive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	os.WriteFile(p, []byte("x"), 0o600)
	a, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer a.Close()
	b, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer b.Close()
	if err := Lock(a); err != nil {
		t.Fatal(err)
	}
	if err := Lock(b); err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second lock: %v", err)
	}
}
