// Package kbs writes the command lines that register a state key with a
// Trustee key broker (KBS), for the kbs-client of Trustee 0.21 and later:
//
//	kbs-client [--url URL] [--cert-file FILE] config [--admin-token-file FILE] \
//	    set-resource --path PATH --resource-file FILE
//
// (--url and --cert-file belong to kbs-client itself and come before the
// subcommand; --admin-token-file belongs to config and comes before
// set-resource.) Without --admin-token-file, kbs-client 0.21 tries
// kbs/config/docker-compose/admin-token, then ~/.trustee/admin-token, then
// sends the request unauthenticated. kbs-client before 0.21 took
// "config --auth-private-key KEY" (the admin's Ed25519 private key) instead.
package kbs

import (
	"strings"
)

// Variables a printed command line uses where the caller gave no value:
// the script or the help text that prints the line says what to set.
const (
	URLVar   = "KBS_URL"
	TokenVar = "KBS_ADMIN_TOKEN"
)

// Word is one argument of a command line: a literal, or a reference to a
// shell variable (Var set).
type Word struct {
	Lit string
	Var string
}

func (w Word) String() string {
	if w.Var != "" {
		return `"$` + w.Var + `"`
	}
	return Quote(w.Lit)
}

// SetResource is a kbs-client set-resource invocation.
type SetResource struct {
	URL          Word // the broker's root URL
	AdminToken   Word // the admin token file; zero: kbs-client's own defaults
	Path         string
	ResourceFile string
}

// Args returns the command's argument vector (without "kbs-client").
func (s SetResource) Args() []Word {
	a := []Word{{Lit: "--url"}, s.URL, {Lit: "config"}}
	if s.AdminToken != (Word{}) {
		a = append(a, Word{Lit: "--admin-token-file"}, s.AdminToken)
	}
	return append(a, Word{Lit: "set-resource"}, Word{Lit: "--path"}, Word{Lit: s.Path}, Word{Lit: "--resource-file"}, Word{Lit: s.ResourceFile})
}

// Line is the shell command line.
func (s SetResource) Line() string {
	parts := []string{"kbs-client"}
	for _, w := range s.Args() {
		parts = append(parts, w.String())
	}
	return strings.Join(parts, " ")
}

// Literal returns w as a literal word, or as a reference to variable v when
// lit is empty.
func Literal(lit, v string) Word {
	if lit == "" {
		return Word{Var: v}
	}
	return Word{Lit: lit}
}

// Quote quotes s for a POSIX shell, leaving plain words as they are.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	for _, r := range s {
		if !(r == '/' || r == '.' || r == '-' || r == '_' || r == ':' || r == '=' || r == '+' || r == ',' || r == '@' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}
