package fleet

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
)

func testOptions(t *testing.T, dir string) Options {
	cert, signer, err := ekcert.NewSelfSigned("fleet test CA", false, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		Dir: dir, Jobs: 2, Cert: pipeline.CertOptions{CA: &ekcert.CA{Cert: cert, Signer: signer}},
		Defaults: Defaults{Profile: "svsm-poc", Algs: []ek.Alg{ek.RSA2048, ek.ECCP256}},
	}
}

func write(t *testing.T, path, s string) string {
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Bad rows are refused before anything is made, with their line number.
func TestManifestRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ text, want string }{
		{"name,profile\nvm1,svsm-poc\nvm1,svsm-2026\n", "line 3: name \"vm1\" already used on line 2"},
		{"name,colour\nvm1,blue\n", "line 1: unknown column \"colour\""},
		{"name\nvm1\n../etc\n", "line 3: invalid name \"../etc\""},
		{"name\na/b\n", "line 2: invalid name"},
		{"name\n..\n", "line 2: invalid name"},
		{"name\nregister\n", "line 2: invalid name"},
		{"name,profile\nvm1,svsm-1999\n", "line 2: unknown TPM profile"},
		{"name,key_file\nvm1,/nonexistent/key\n", "line 2: key_file: /nonexistent/key: no such key file"},
		{"name,container\nvm1,ext4\n", "line 2: unknown container"},
		{"{\"name\":\"a\"}\n{\"name\":\"b\",\"owner\":\"x\"}\n", "line 2: unknown field \"owner\""},
		{"", "no VMs"},
		{"{\"name\":\"a\",\"size\":1.5}\n", "line 1: field \"size\": 1.5 is not a whole number"},
		{"{\"name\":\"a\",\"size\":1e30}\n", "line 1: field \"size\": 1e+30 is not a whole number"},
		{"name\n\"vm1\"x\n", "line 2, column 5: extraneous or missing \" in quoted-field"},
		{"name\nvm1\nvm2,x\n", "record on line 3: wrong number of fields"},
	} {
		p := write(t, filepath.Join(dir, "m"), c.text)
		_, err := ParseManifest(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%q: %v (want %q)", c.text, err, c.want)
		}
	}
	key := write(t, filepath.Join(dir, "k"), strings.Repeat("ab", 64))
	vms, err := ParseManifest(write(t, filepath.Join(dir, "ok.jsonl"), `{"name":"vm-1","profile":"svsm-2026","size":"1048576"}`+"\n"+`{"name":"vm-2","key_file":"`+key+`"}`+"\n"))
	if err != nil || len(vms) != 2 || vms[0].Profile != "svsm-2026" || vms[1].KeyFile != key {
		t.Fatalf("%v %+v", err, vms)
	}
	// A whole number is taken as the string of its digits.
	vms, err = ParseManifest(write(t, filepath.Join(dir, "n.jsonl"), `{"name":"vm-1","size":16777216}`+"\n"))
	if err != nil || len(vms) != 1 || vms[0].Size != "16777216" {
		t.Fatalf("numeric size: %v %+v", err, vms)
	}
}

func TestShard(t *testing.T) {
	vms, _ := Generate(100, "vm-%03d")
	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		for _, vm := range Shard(vms, i, 4) {
			seen[vm.Name]++
		}
	}
	if len(seen) != 100 {
		t.Fatalf("shards cover %d of 100", len(seen))
	}
	for n, c := range seen {
		if c != 1 {
			t.Errorf("%s in %d shards", n, c)
		}
	}
	a, b := Shard(vms, 2, 4), Shard(vms, 2, 4)
	if fmt.Sprint(a) != fmt.Sprint(b) || len(a) < 10 {
		t.Error("shard not deterministic or unbalanced")
	}
}

func countLines(t *testing.T, p string) int {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for s := bufio.NewScanner(f); s.Scan(); n++ {
	}
	return n
}

// A run resumes: finished VMs are re-verified, a killed run's temporary
// directory is removed, the rest is made; the index covers them all.
func TestRunResume(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(t, dir)
	key := write(t, filepath.Join(t.TempDir(), "own.key"), strings.Repeat("cd", 64))
	vms := []VM{{Name: "a"}, {Name: "b", Profile: "svsm-2026", Size: "1048576"}, {Name: "c", KeyFile: key}}
	s, err := Run(context.Background(), vms, opts)
	if err != nil || s.Made != 3 || s.Failed != 0 {
		t.Fatalf("%v %+v", err, s)
	}
	if _, err := os.Stat(filepath.Join(dir, "c", "state.key")); err == nil {
		t.Error("a VM with its own key_file got a state.key")
	}
	os.Mkdir(filepath.Join(dir, ".d.tmp-123"), 0o755) // a killed run's leftover
	vms = append(vms, VM{Name: "d"})
	s, err = Run(context.Background(), vms, opts)
	if err != nil || s.Made != 1 || s.Verified != 3 || s.Failed != 0 {
		t.Fatalf("resume: %v %+v", err, s)
	}
	if _, err := os.Stat(filepath.Join(dir, ".d.tmp-123")); err == nil {
		t.Error("stale temporary directory survived")
	}
	if n := countLines(t, filepath.Join(dir, "fleet.jsonl")); n != 4 {
		t.Errorf("fleet.jsonl has %d lines", n)
	}
	kbs, _ := os.ReadFile(filepath.Join(dir, "register", "kbs.jsonl"))
	if !strings.Contains(string(kbs), `"path":"default/b/state-key","resource_file":"b/state.key"`) || !strings.Contains(string(kbs), "c/state.key.raw") {
		t.Errorf("kbs.jsonl: %s", kbs)
	}
	if st, err := os.Stat(filepath.Join(dir, "c", "state.key.raw")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("raw copy of a hex key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "register", "keylime", "tpm_cert_store", "vtpm-mfg-ca-0.pem")); err != nil {
		t.Error(err)
	}
	// Tampering is found by verify, naming the VM.
	img := filepath.Join(dir, "b", "state.img")
	b, _ := os.ReadFile(img)
	b[40000] ^= 0xff
	os.WriteFile(img, b, 0o600)
	res, err := VerifyDir(context.Background(), dir, opts.Cert.CA.Cert, nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if (r.Name == "b") == r.OK {
			t.Errorf("%s: ok=%v %s", r.Name, r.OK, r.Error)
		}
	}
}

// Two runs on one directory exclude each other; an interrupted run stops
// taking VMs and says what is left.
func TestRunLockAndInterrupt(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(t, dir)
	lk, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), []VM{{Name: "a"}}, opts); err == nil || !strings.Contains(err.Error(), "another batch run") {
		t.Fatalf("second run: %v", err)
	}
	lk.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	vms, _ := Generate(50, "vm-%02d")
	s, err := Run(ctx, vms, opts)
	if err != nil || !s.Interrupted || s.NotStarted < 40 {
		t.Fatalf("%v %+v", err, s)
	}
	names, _ := VMDirs(dir)
	if len(names) != s.Made {
		t.Errorf("%d directories for %d made", len(names), s.Made)
	}
}
