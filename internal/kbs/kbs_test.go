package kbs

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// grammar is kbs-client 0.21's (Trustee tools/kbs-client): options of the
// command itself, then "config" and its options, then "set-resource" and
// its options. Each option takes one value; set-resource needs both of its
// options.
var grammar = []struct {
	word     string
	options  map[string]bool
	required []string
}{
	{"kbs-client", map[string]bool{"--url": true, "--cert-file": true}, nil},
	{"config", map[string]bool{"--admin-token-file": true}, nil},
	{"set-resource", map[string]bool{"--path": true, "--resource-file": true}, []string{"--path", "--resource-file"}},
}

// checkGrammar parses argv (argv[0] = "kbs-client") as kbs-client 0.21
// does and returns the option values.
func checkGrammar(t *testing.T, argv []string) map[string]string {
	t.Helper()
	vals := map[string]string{}
	i := 0
	for _, level := range grammar {
		if i >= len(argv) || argv[i] != level.word {
			t.Fatalf("%q: want %q at argument %d", argv, level.word, i)
		}
		i++
		for i < len(argv) && strings.HasPrefix(argv[i], "--") {
			if !level.options[argv[i]] {
				t.Fatalf("%q: %s takes no option %s", argv, level.word, argv[i])
			}
			if i+1 >= len(argv) || argv[i+1] == "" {
				t.Fatalf("%q: %s needs a value", argv, argv[i])
			}
			vals[argv[i]] = argv[i+1]
			i += 2
		}
		for _, r := range level.required {
			if _, ok := vals[r]; !ok {
				t.Fatalf("%q: %s needs %s", argv, level.word, r)
			}
		}
	}
	if i != len(argv) {
		t.Fatalf("%q: arguments left over: %q", argv, argv[i:])
	}
	return vals
}

// shellArgv runs line with a POSIX shell, with a kbs-client on PATH that
// prints its arguments, and returns the argument vector the shell built.
func shellArgv(t *testing.T, line string, env ...string) []string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	bin := t.TempDir()
	stub := "#!" + sh + "\nprintf 'kbs-client\\0'; for a; do printf '%s\\0' \"$a\"; done\n"
	if err := os.WriteFile(filepath.Join(bin, "kbs-client"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sh, "-c", line)
	cmd.Env = append(env, "PATH="+bin+":/usr/bin:/bin")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

func TestLinesParseAsKBSClient021(t *testing.T) {
	cases := []struct {
		s    SetResource
		env  []string
		want map[string]string
	}{
		{SetResource{URL: Word{Var: URLVar}, AdminToken: Word{Var: TokenVar}, Path: "default/vm-1/state-key", ResourceFile: "vm-1/state.key"},
			[]string{"KBS_URL=https://kbs:8080", "KBS_ADMIN_TOKEN=/etc/kbs/admin token"},
			map[string]string{"--url": "https://kbs:8080", "--admin-token-file": "/etc/kbs/admin token", "--path": "default/vm-1/state-key", "--resource-file": "vm-1/state.key"}},
		{SetResource{URL: Word{Lit: "http://127.0.0.1:8080"}, Path: "default/sample/test", ResourceFile: "it's a key; rm -rf $HOME"},
			nil,
			map[string]string{"--url": "http://127.0.0.1:8080", "--path": "default/sample/test", "--resource-file": "it's a key; rm -rf $HOME"}},
		{SetResource{URL: Word{Lit: "http://kbs"}, AdminToken: Literal("tok en", TokenVar), Path: "a b/c", ResourceFile: "-x"},
			nil,
			map[string]string{"--url": "http://kbs", "--admin-token-file": "tok en", "--path": "a b/c", "--resource-file": "-x"}},
	}
	for _, c := range cases {
		line := c.s.Line()
		got := checkGrammar(t, shellArgv(t, line, c.env...))
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %v\nwant %v", line, got, c.want)
		}
		if strings.Contains(line, "auth-private-key") {
			t.Errorf("%s: kbs-client 0.21 has no --auth-private-key", line)
		}
	}
}

// The grammar check itself refuses what kbs-client 0.21 refuses.
func TestGrammarRefuses(t *testing.T) {
	for _, argv := range [][]string{
		{"kbs-client", "--url", "u", "config", "--auth-private-key", "k", "set-resource", "--path", "p", "--resource-file", "f"},
		{"kbs-client", "config", "--url", "u", "set-resource", "--path", "p", "--resource-file", "f"},
		{"kbs-client", "--url", "u", "config", "set-resource", "--path", "p"},
	} {
		ft := &testing.T{}
		done := make(chan bool)
		go func() {
			defer func() { recover(); done <- true }()
			checkGrammar(ft, argv)
		}()
		<-done
		if !ft.Failed() {
			t.Errorf("%q accepted", argv)
		}
	}
}
