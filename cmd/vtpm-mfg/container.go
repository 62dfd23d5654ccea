package main

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/container"
	"github.com/vtpm-mfg/vtpm-mfg/internal/kbs"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
)

var sizeFlag = &cli.StringFlag{Name: "size", Usage: "size of the new state image: `SIZE` in bytes, or with a unit: 512K, 8M, 16MiB, 1G (default: 16 MiB for BlockFS, 8 MiB for CocoonFS)"}

var (
	kbsURLFlag   = &cli.StringFlag{Name: "kbs-url", Usage: "the key broker's root `URL`, for the printed kbs-client lines (default: \"$KBS_URL\")"}
	kbsTokenFlag = &cli.StringFlag{Name: "kbs-admin-token", Usage: "the broker's admin token `FILE`, for the printed kbs-client lines (kbs-client 0.21 config --admin-token-file; default: \"$KBS_ADMIN_TOKEN\")"}
)

var containerFlag = &cli.StringFlag{Name: "container", Usage: "state image `FORMAT`: blockfs or cocoonfs (default: the one the profile's SVSM reads)"}

var strengthFlag = &cli.IntFlag{Name: "cocoonfs-strength", Value: 128, Usage: "CocoonFS security strength in `BITS`: 128 (AES-128, SHA-256, as the upstream documentation formats), 192 or 256 (AES-192/256, SHA-384/512 for the authentication tree)"}

var zeroFreeFlag = &cli.BoolFlag{Name: "cocoonfs-zero-free", Usage: "leave free CocoonFS space zero (a sparse file) instead of random bytes as the SVSM's own mkfs does"}

// createOptions reads the flags of a new state image.
func createOptions(c *cli.Context) (pipeline.CreateOptions, error) {
	o := pipeline.CreateOptions{Overwrite: c.Bool("force"), Strength: c.Int("cocoonfs-strength"), ZeroFree: c.Bool("cocoonfs-zero-free")}
	if c.IsSet("size") {
		n, err := container.ParseSize(c.String("size"))
		if err != nil {
			return o, usagef("%s: --size: %v", c.Command.FullName(), err)
		}
		o.Size = n
	}
	switch o.Strength {
	case 128, 192, 256:
	default:
		return o, usagef("%s: --cocoonfs-strength must be 128, 192 or 256", c.Command.FullName())
	}
	return o, nil
}

// checkCreate refuses, before any work, a --size the container cannot
// take and CocoonFS flags for another container.
func checkCreate(c *cli.Context, f container.Format, o pipeline.CreateOptions) error {
	if o.Size != 0 {
		if err := f.CheckSize(o.Size, o); err != nil {
			return usagef("%s: --size %s: %v", c.Command.FullName(), c.String("size"), err)
		}
	}
	if f.Name() != "cocoonfs" {
		for _, fl := range []string{"cocoonfs-strength", "cocoonfs-zero-free"} {
			if c.IsSet(fl) {
				return usagef("%s: --%s applies to CocoonFS images only, and this image is %s; drop the flag", c.Command.FullName(), fl, f.Name())
			}
		}
	}
	return nil
}

// resolveContainer picks the container to write for profile p.
func resolveContainer(c *cli.Context, p *nv.Profile) (container.Format, error) {
	f, err := pipeline.ResolveContainer(p, c.String("container"), c.IsSet("container"))
	if err != nil {
		var pe *pipeline.PairingError
		if errors.As(err, &pe) {
			return nil, err
		}
		return nil, usagef("%s: --container: %v", c.Command.FullName(), err)
	}
	return f, nil
}

func (e *cmdEnv) keyCmd() *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "create a state key and print it in the forms key brokers take",
		Subcommands: []*cli.Command{
			{
				Name:      "generate",
				Usage:     "write a new 64-byte state key (mode 0600) from the system's CSPRNG",
				UsageText: "vtpm-mfg key generate -o FILE [--hex] [--force]",
				Description: `Writes 64 random bytes, raw, or as 128 hex characters with --hex.
Refuses to overwrite an existing file unless --force is given.

Example:
  vtpm-mfg key generate -o state.key`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "key `FILE` to create"},
					&cli.BoolFlag{Name: "hex", Usage: "write 128 hex characters and a newline instead of raw bytes"},
					forceFlag,
				},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					if err := need(c, "output"); err != nil {
						return err
					}
					k := make([]byte, keyfile.Size)
					if _, err := rand.Read(k); err != nil {
						return err
					}
					defer keyfile.Wipe(k)
					data := k
					if c.Bool("hex") {
						data = []byte(keyfile.Forms(k).Hex + "\n")
						defer keyfile.Wipe(data)
					}
					if err := atomicfile.WriteSecret(c.String("output"), data, c.Bool("force")); err != nil {
						return err
					}
					fmt.Fprintf(e.stderr, "wrote a new 64-byte state key to %s (mode 0600)\n", c.String("output"))
					return nil
				},
			},
			{
				Name:      "kbs",
				Usage:     "print a state key in the forms key brokers need",
				UsageText: "vtpm-mfg key kbs (--key-file FILE | --key-env NAME) [--write-raw FILE [--force]] [--json]",
				Description: `Prints the key for registration with a key broker:
  hex      the 128-character string (2024 SVSM proof of concept, RAClients;
           register it without a trailing newline)
  base64   the raw bytes in base64, as kbs-test -s takes it (2025 demo)
  raw      a file with the 64 raw bytes, for Trustee: upstream SVSM (CocoonFS
           images) asks the broker for the resource default/sample/test and
           uses its raw bytes as the CocoonFS key; register it with
           Trustee's kbs-client 0.21 or later:
             kbs-client --url URL config [--admin-token-file TOKEN] \
               set-resource --path default/sample/test --resource-file FILE
           (FILE: the key file itself if it is raw; else write one with
           --write-raw). The printed line names --kbs-url and
           --kbs-admin-token if given, else "$KBS_URL" and "$KBS_ADMIN_TOKEN"
           for you to set. kbs-client before 0.21 takes
             kbs-client --url URL config --auth-private-key ADMIN_KEY \
               set-resource --path default/sample/test --resource-file FILE
fingerprint  SHA-256 of the raw key, as inspect prints it: compare the two
           to check that a key is the one registered for an image.

This prints secret material: run it only where the output is safe.

Examples:
  vtpm-mfg key kbs --key-file state.key
  vtpm-mfg key kbs --key-file state.key --kbs-url https://kbs.example:8080 --kbs-admin-token admin-token`,
				Flags: append(keyFlags("", "state key"),
					&cli.StringFlag{Name: "write-raw", Usage: "also write the 64 raw bytes to `FILE` (mode 0600)"},
					&cli.BoolFlag{Name: "force", Usage: "replace an existing --write-raw file"},
					kbsURLFlag, kbsTokenFlag,
					jsonFlag),
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					k, err := e.loadKey(c, "")
					if err != nil {
						return err
					}
					defer keyfile.Wipe(k)
					rawPath := ""
					if p := c.String("write-raw"); p != "" {
						if p == "-" {
							return usagef("key kbs: --write-raw -: raw key bytes are never written to standard output; give a file name")
						}
						if err := atomicfile.WriteSecret(p, k, c.Bool("force")); err != nil {
							return err
						}
						rawPath = p
					} else if f := c.String("key-file"); f != "" && f != "-" {
						if st, err := os.Stat(f); err == nil && st.Size() == keyfile.Size {
							rawPath = f
						}
					}
					forms := keyfile.Forms(k)
					trustee := ""
					if rawPath != "" {
						trustee = kbs.SetResource{URL: kbs.Literal(c.String("kbs-url"), kbs.URLVar), AdminToken: kbs.Literal(c.String("kbs-admin-token"), kbs.TokenVar),
							Path: upstreamKBSResource, ResourceFile: rawPath}.Line()
					}
					if c.Bool("json") {
						return e.printJSON(map[string]string{"hex": forms.Hex, "base64": forms.Base64, "raw_file": rawPath, "fingerprint": keyfile.Fingerprint(k),
							"upstream_svsm_resource": upstreamKBSResource, "trustee_command": trustee})
					}
					fmt.Fprintf(e.stdout, "hex:    %s\nbase64: %s\nfingerprint: %s\n", forms.Hex, forms.Base64, keyfile.Fingerprint(k))
					if rawPath != "" {
						fmt.Fprintf(e.stdout, "raw:    %s\n", rawPath)
						fmt.Fprintf(e.stdout, "upstream SVSM (CocoonFS) asks the broker for %s, raw bytes; with Trustee:\n  %s\n", upstreamKBSResource, trustee)
					} else {
						fmt.Fprintf(e.stdout, "raw:    (the key file is hex; write a raw copy with --write-raw FILE)\n")
					}
					return nil
				},
			},
		},
	}
}

func (e *cmdEnv) packCmd() *cli.Command {
	return &cli.Command{
		Name:      "pack",
		Usage:     "wrap a raw NVChip into a new encrypted state image",
		UsageText: "vtpm-mfg pack --nvchip FILE (--key-file K | --key-env NAME) -o IMAGE [--container C] [--size BYTES] [--force]",
		Description: `The NVChip must be exactly 16384 bytes (the TPM's NV_MEMORY_SIZE). The
container is the one the SVSM of the NVChip's TPM build reads: BlockFS for
svsm-poc (sparse, 16 MiB by default, 33 sectors written), CocoonFS for
svsm-2026 (8 MiB by default, with the "manufactured" marker the SVSM
checks). An NVChip that fits no known build is refused: the SVSM's TPM
would re-manufacture it; --force packs it anyway (into --container,
default blockfs). New images are mode 0600.

Examples:
  vtpm-mfg pack --nvchip NVChip --key-file state.key -o state.img
  vtpm-mfg pack --nvchip NVChip --key-file state.key --container cocoonfs -o state.img`,
		Flags: append(keyFlags("", "state key"),
			&cli.StringFlag{Name: "nvchip", Usage: "raw NVChip `FILE` to pack"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "state image `FILE` to create"},
			containerFlag, strengthFlag, zeroFreeFlag, sizeFlag,
			&cli.BoolFlag{Name: "force", Usage: "replace an existing output file; also pack an NVChip that fits no known TPM profile"},
			jsonFlag),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if err := need(c, "nvchip", "output"); err != nil {
				return err
			}
			in, out := c.String("nvchip"), c.String("output")
			if sameFile(in, out) {
				return usagef("pack: the output %s is the input; write to a new file", out)
			}
			k, err := e.loadKey(c, "")
			if err != nil {
				return err
			}
			defer keyfile.Wipe(k)
			o, err := createOptions(c)
			if err != nil {
				return err
			}
			nvb, err := pipeline.ReadNVChipFile(in)
			if err != nil {
				return err
			}
			defer clear(nvb)
			prof := "fits no known TPM profile"
			var f container.Format
			if im, perr := pipeline.ParseNV(in, nvb, ""); perr == nil {
				prof = "TPM profile " + im.Profile.Name
				if f, err = resolveContainer(c, im.Profile); err != nil {
					return err
				}
			} else if !c.Bool("force") {
				return fmt.Errorf("%w\n(the SVSM's TPM would re-manufacture it; give --force, and --container, to pack it anyway)", perr)
			} else if f, err = container.Get(cmp.Or(c.String("container"), "blockfs")); err != nil {
				return usagef("pack: --container: %v", err)
			}
			if err := checkCreate(c, f, o); err != nil {
				return err
			}
			if err := pipeline.WriteState(f, out, k, nvb, o); err != nil {
				return err
			}
			if c.Bool("json") {
				return e.printJSON(map[string]string{"nvchip": in, "output": out, "container": f.Name(), "profile": strings.TrimPrefix(prof, "TPM profile "), "nvchip_sha256": sha256Hex(nvb)})
			}
			fmt.Fprintf(e.stderr, "packed %s into %s (%s, %s)\n", in, out, f.Name(), prof)
			return nil
		},
	}
}

func (e *cmdEnv) unpackCmd() *cli.Command {
	return &cli.Command{
		Name:      "unpack",
		Usage:     "decrypt the NVChip out of a state image",
		UsageText: "vtpm-mfg unpack --state IMAGE (--key-file K | --key-env NAME) -o NVCHIP [--force]",
		Description: `Writes the 16384-byte NVChip (mode 0600: it holds the TPM's seeds).

Example:
  vtpm-mfg unpack --state state.img --key-file state.key -o NVChip`,
		Flags: append(keyFlags("", "state key"),
			&cli.StringFlag{Name: "state", Usage: "state image `FILE`"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "NVChip `FILE` to create"},
			forceFlag, jsonFlag),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if err := need(c, "state", "output"); err != nil {
				return err
			}
			in, out := c.String("state"), c.String("output")
			if sameFile(in, out) {
				return usagef("unpack: the output %s is the input; write to a new file", out)
			}
			k, err := e.loadKey(c, "")
			if err != nil {
				return err
			}
			defer keyfile.Wipe(k)
			nvb, info, err := pipeline.ReadStateNVChip(in, k)
			if err != nil {
				return err
			}
			defer clear(nvb)
			if err := writeOut(out, nvb, true, c.Bool("force")); err != nil {
				return err
			}
			if c.Bool("json") {
				return e.printJSON(map[string]string{"state": in, "container": info.Container, "output": out, "nvchip_sha256": sha256Hex(nvb)})
			}
			fmt.Fprintf(e.stderr, "wrote the NVChip of %s to %s\n", in, out)
			return nil
		},
	}
}

func (e *cmdEnv) rotateKeyCmd() *cli.Command {
	return &cli.Command{
		Name:      "rotate-key",
		Usage:     "re-encrypt a state image under a new key, in place and atomically",
		UsageText: "vtpm-mfg rotate-key --state IMAGE (--key-file OLD | --key-env NAME) (--new-key-file NEW | --new-key-env NAME)",
		Description: `Proves that the old key opens the image, then rewrites the image under the
new key (temporary file, fsync, rename). BlockFS: only the sectors in use
are re-encrypted; the rest of the image is carried over, holes stay holes.
CocoonFS: the whole filesystem is re-encrypted under keys derived from the
new key and a fresh salt; every file (UEFI variables included), its flags
and the auxiliary metadata are kept byte for byte, and the new image is
read back before it replaces the old one.
Register the new key with the key broker before the VM boots again.

Example:
  vtpm-mfg key generate -o new.key
  vtpm-mfg rotate-key --state state.img --key-file state.key --new-key-file new.key`,
		Flags: append(append(keyFlags("", "current state key"), keyFlags("new-", "new state key")...),
			&cli.StringFlag{Name: "state", Usage: "state image `FILE` to re-encrypt"}, jsonFlag),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if err := need(c, "state"); err != nil {
				return err
			}
			old, err := e.loadKey(c, "")
			if err != nil {
				return err
			}
			defer keyfile.Wipe(old)
			nk, err := e.loadKey(c, "new-")
			if err != nil {
				return err
			}
			defer keyfile.Wipe(nk)
			if string(old) == string(nk) {
				return usagef("rotate-key: the new key is the current key")
			}
			warnings, err := pipeline.RotateKey(c.String("state"), old, nk)
			if err != nil {
				return err
			}
			e.warn(c.String("state"), warnings)
			if c.Bool("json") {
				return e.printJSON(map[string]any{"state": c.String("state"), "rotated": true})
			}
			fmt.Fprintf(e.stderr, "re-encrypted %s under the new key\n", c.String("state"))
			return nil
		},
	}
}
