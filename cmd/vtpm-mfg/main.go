// Command vtpm-mfg manufactures the virtual TPM of a COCONUT-SVSM
// confidential VM offline: fresh TPM state, EK certificates in NV, sealed
// into the encrypted state image the SVSM loads.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// version is set at build time.
var version = "dev"

func main() { os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr)) }

// usageError marks mistakes in how the command was called (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// positionalLast moves the one positional argument of "batch verify DIR"
// and "batch index DIR" after their flags, so that flags may follow it.
func positionalLast(args []string) []string {
	if len(args) < 4 || args[1] != "batch" || (args[2] != "verify" && args[2] != "index") {
		return args
	}
	withValue := map[string]bool{"--ca-cert": true, "-ca-cert": true, "--jobs": true, "-jobs": true, "--kbs-path": true, "-kbs-path": true, "--kbs-admin-token": true, "-kbs-admin-token": true}
	var flags, pos []string
	rest := args[3:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			pos = append(pos, rest[i+1:]...)
			i = len(rest)
		case strings.HasPrefix(a, "-") && a != "-":
			flags = append(flags, a)
			if withValue[a] && i+1 < len(rest) {
				flags = append(flags, rest[i+1])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	return append(append(append([]string(nil), args[:3]...), flags...), pos...)
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	args = positionalLast(args)
	app := newApp(stdin, stdout, stderr)
	err := app.Run(args)
	if err == nil {
		return 0
	}
	var ue *usageError
	var ec cli.ExitCoder
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "vtpm-mfg: %s\nRun 'vtpm-mfg --help' or 'vtpm-mfg COMMAND --help' for usage.\n", ue.msg)
		return 2
	case errors.As(err, &ec):
		if msg := err.Error(); msg != "" {
			fmt.Fprintf(stderr, "vtpm-mfg: %s\n", msg)
		}
		return ec.ExitCode()
	case strings.HasPrefix(err.Error(), "Required flag") || strings.HasPrefix(err.Error(), "flag provided but not defined") || strings.HasPrefix(err.Error(), "invalid value"):
		fmt.Fprintf(stderr, "vtpm-mfg: %s\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "vtpm-mfg: %s\n", err)
	return 1
}

const appHelp = `vtpm-mfg manufactures the virtual TPM of an AMD SEV-SNP confidential VM
running COCONUT-SVSM, offline, the way a TPM factory does: fresh primary
seeds, the TCG endorsement keys, CA-signed EK certificates in platform NV
indices 0x01C00002 (RSA-2048) and 0x01C0000A (ECC P-256), written into the
exact NV image the SVSM's TPM loads and encrypted into its state image
with the 64-byte key your key broker (KBS) releases after attestation.

Keys are read from files (--key-file, "-" for standard input) or
environment variables (--key-env), never from the command line.

Examples:
  vtpm-mfg key generate -o state.key
  vtpm-mfg ca init --out-cert ca.pem --out-key ca.key
  vtpm-mfg manufacture --key-file state.key --ca-cert ca.pem --ca-key ca.key -o state.img
  vtpm-mfg verify --state state.img --key-file state.key --ca-cert ca.pem
  vtpm-mfg inspect --state state.img --key-file state.key

Exit status: 0 success, 1 operational error (nothing was changed),
2 usage error.`

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	env := &cmdEnv{stdin: stdin, stdout: stdout, stderr: stderr}
	app := &cli.App{
		Name:            "vtpm-mfg",
		Usage:           "manufacture COCONUT-SVSM vTPM state images with EK certificates",
		Description:     appHelp,
		Version:         version,
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return &usageError{err.Error()}
		},
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(stderr, "vtpm-mfg: unknown command %q\n", name)
			os.Exit(2)
		},
		ExitErrHandler: func(c *cli.Context, err error) {},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unknown command %q", c.Args().First())
			}
			cli.ShowAppHelp(c)
			return usagef("no command given")
		},
		Commands: []*cli.Command{
			env.manufactureCmd(),
			env.installCertCmd(),
			env.verifyCmd(),
			env.inspectCmd(),
			env.rotateKeyCmd(),
			env.packCmd(),
			env.unpackCmd(),
			env.keyCmd(),
			env.caCmd(),
			env.nvCmd(),
			env.ekCmd(),
			env.batchCmd(),
			env.attestCmd(),
			env.luksCmd(),
		},
	}
	for _, c := range app.Commands {
		setUsageErrors(c)
	}
	return app
}

func setUsageErrors(c *cli.Command) {
	c.OnUsageError = func(ctx *cli.Context, err error, isSub bool) error { return &usageError{err.Error()} }
	for _, f := range c.Flags {
		if f.Names()[0] == "profile" {
			c.Before = func(ctx *cli.Context) error {
				if v := ctx.String("profile"); ctx.IsSet("profile") || v != "" {
					if _, err := nv.Get(v); err != nil {
						return usagef("%s: --profile: %v", ctx.Command.FullName(), err)
					}
				}
				return nil
			}
		}
	}
	for _, s := range c.Subcommands {
		setUsageErrors(s)
	}
}

type cmdEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// noArgs rejects positional arguments: every input is a named flag.
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("%s: unexpected argument %q (inputs are given with flags; see --help)", c.Command.FullName(), c.Args().First())
	}
	return nil
}

func need(c *cli.Context, flags ...string) error {
	for _, f := range flags {
		if !c.IsSet(f) || c.String(f) == "" {
			return usagef("%s: --%s is required", c.Command.FullName(), f)
		}
		if strings.HasPrefix(f, "out") && c.String(f) == "-" {
			return usagef("%s: --%s -: this output is binary or secret and is never written to standard output; give a file name", c.Command.FullName(), f)
		}
	}
	return nil
}

// envName matches what can name an environment variable.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// looksLikeKey tells an argument that is probably key material (hex or
// base64 of 32 bytes or more) rather than a path or a name.
var (
	hexRE    = regexp.MustCompile(`^[0-9A-Fa-f]+$`)
	base64RE = regexp.MustCompile(`^[0-9A-Za-z+/]+=*$`)
)

func looksLikeKey(s string) bool {
	switch {
	case len(s) >= 32 && hexRE.MatchString(s):
		return true // hex
	case len(s) >= 40 && base64RE.MatchString(s) && strings.ContainsAny(s, "0123456789+/="):
		return true // base64
	}
	return false
}

// keyFlags are the two ways to give a state key.
func keyFlags(prefix, what string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: prefix + "key-file", Usage: "read the " + what + " from `FILE` (\"-\" for standard input): 64 raw bytes or 128 hex characters"},
		&cli.StringFlag{Name: prefix + "key-env", Usage: "read the " + what + " from environment variable `NAME`"},
	}
}

func (e *cmdEnv) loadKey(c *cli.Context, prefix string) ([]byte, error) {
	src := keyfile.Source{File: c.String(prefix + "key-file"), Env: c.String(prefix + "key-env")}
	if src.File == "" && src.Env == "" {
		return nil, usagef("%s: give the %sstate key with --%skey-file or --%skey-env", c.Command.FullName(), strings.ReplaceAll(prefix, "-", " "), prefix, prefix)
	}
	if src.File != "" && src.Env != "" {
		return nil, usagef("%s: give the key with --%skey-file or --%skey-env, not both", c.Command.FullName(), prefix, prefix)
	}
	// Key material given in place of a name is never echoed.
	if _, set := os.LookupEnv(src.Env); src.Env != "" && (!envName.MatchString(src.Env) || looksLikeKey(src.Env) && !set) {
		return nil, usagef("%s: --%skey-env takes the NAME of an environment variable that holds the key (the argument given is not a variable name and is not shown)", c.Command.FullName(), prefix)
	}
	if src.File != "" && src.File != "-" && looksLikeKey(src.File) {
		if _, err := os.Stat(src.File); err != nil {
			return nil, usagef("%s: --%skey-file takes the path of a file holding the key; the argument looks like key material and is not shown (keys never go on the command line)", c.Command.FullName(), prefix)
		}
	}
	stdinKeys := 0
	for _, f := range c.Command.Flags {
		if n := f.Names()[0]; strings.HasSuffix(n, "key-file") && c.String(n) == "-" {
			stdinKeys++
		}
	}
	if stdinKeys > 1 {
		return nil, usagef("%s: only one key can be read from standard input; give the others with files or --key-env", c.Command.FullName())
	}
	return src.Load(e.stdin)
}

// sameFile reports whether two paths name the same file (or the same path).
func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// warn prints the warnings about a file on standard error.
func (e *cmdEnv) warn(path string, warnings []string) {
	for _, w := range warnings {
		fmt.Fprintf(e.stderr, "warning: %s: %s\n", path, w)
	}
}

// printJSONLine prints one compact JSON line (progress events).
func (e *cmdEnv) printJSONLine(v any) error {
	return json.NewEncoder(e.stdout).Encode(v)
}

func (e *cmdEnv) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeOut writes a non-secret (0644) or secret (0600) output file.
func writeOut(path string, data []byte, secret, force bool) error {
	mode := os.FileMode(0o644)
	if secret {
		mode = 0o600
	}
	return atomicfile.Create(path, mode, force, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

var forceFlag = &cli.BoolFlag{Name: "force", Usage: "replace an existing output file"}
var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON"}
