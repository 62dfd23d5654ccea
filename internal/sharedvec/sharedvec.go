// Package sharedvec locates the measured reference files (golden NVChips,
// state-image and EK vectors) that tests compare against. They live in a
// directory named "shared" next to the checkout, or where VTPM_MFG_SHARED
// points; when absent, tests that need them skip with a clear message.
package sharedvec

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir returns the reference directory, or "" if there is none.
func Dir() string {
	if d := os.Getenv("VTPM_MFG_SHARED"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			s := filepath.Join(filepath.Dir(d), "shared")
			if st, err := os.Stat(s); err == nil && st.IsDir() {
				return s
			}
			return ""
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// Path returns the path of a reference file, skipping the test if it is
// not available.
func Path(t testing.TB, rel string) string {
	t.Helper()
	d := Dir()
	if d == "" {
		t.Skipf("reference vectors not available (no ../shared next to the checkout, VTPM_MFG_SHARED unset): skipping comparison with %s", rel)
	}
	p := filepath.Join(d, rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("reference vector %s not available: %v", rel, err)
	}
	return p
}

// Read returns the content of a reference file, skipping if absent.
func Read(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
