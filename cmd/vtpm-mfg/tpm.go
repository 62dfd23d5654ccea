package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/container"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
)

func profileFlag(dflt string) *cli.StringFlag {
	u := "TPM build `PROFILE`: " + strings.Join(nv.Names(), " or ")
	if dflt == "" {
		u += " (default: whichever the image fits)"
	}
	return &cli.StringFlag{Name: "profile", Value: dflt, Usage: u}
}

// loadImage reads the NV image from --nvchip or from --state with a key.
func (e *cmdEnv) loadImage(c *cli.Context) (*nv.Image, *pipeline.ContainerInfo, error) {
	nvPath, state := c.String("nvchip"), c.String("state")
	switch {
	case nvPath != "" && state != "":
		return nil, nil, usagef("%s: give --nvchip or --state, not both", c.Command.FullName())
	case nvPath != "":
		im, err := pipeline.ReadNVChip(nvPath, c.String("profile"))
		return im, nil, err
	case state != "":
		k, err := e.loadKey(c, "")
		if err != nil {
			return nil, nil, err
		}
		defer keyfile.Wipe(k)
		im, info, err := pipeline.ReadState(state, k, c.String("profile"))
		return im, info, err
	}
	return nil, nil, usagef("%s: give --nvchip FILE or --state IMAGE", c.Command.FullName())
}

// printContainer prints what inspect shows of a state image's container.
func printContainer(w io.Writer, info *pipeline.ContainerInfo) {
	fmt.Fprintf(w, "state image:        %s\n", info.Path)
	fmt.Fprintf(w, "image size:         %d bytes (%d allocated)\n", info.ImageSize, info.AllocatedSize)
	if info.KeyFingerprint != "" {
		fmt.Fprintf(w, "state key:          %s (key kbs prints the same for the key registered with the broker)\n", info.KeyFingerprint)
	}
	if ci := info.CocoonFS; ci != nil {
		fmt.Fprintf(w, "container:          CocoonFS format version %d, filesystem %d bytes, salt %d bytes, update counter %s\n", ci.FormatVersion, ci.FilesystemSize, ci.SaltLen, ci.UpdateCounter)
		fmt.Fprintf(w, "layout:             allocation block %d, IO block %d, auth tree node %d / data block %d, bitmap block %d, index nodes %d/%d bytes\n",
			ci.AllocationBlock, ci.IOBlock, ci.AuthTreeNode, ci.AuthTreeDataBlock, ci.BitmapFileBlock, ci.IndexLeafNode, ci.IndexInternalNode)
		fmt.Fprintf(w, "algorithms:         %s; auth tree nodes %s, data %s HMAC, root %s HMAC, preauth %s HMAC, KDF %s\n",
			ci.Cipher, ci.AuthTreeNodeHash, ci.AuthTreeDataHMAC, ci.AuthTreeRootHMAC, ci.PreauthHMAC, ci.KDFHash)
		fmt.Fprintf(w, "structure:          %d-level authentication tree, %d-level inode index, %d bytes allocated, %d bytes aux metadata\n", ci.AuthTreeLevels, ci.IndexLevels, ci.AllocatedBytes, ci.AuxMetadataBytes)
		fmt.Fprintf(w, "free space:         %d bytes (the SVSM needs %d to rewrite the NVChip)\n", ci.FreeBytes, ci.RewriteFreeBytes)
		fmt.Fprintf(w, "inodes:             %d\n", len(ci.Inodes))
		for _, in := range ci.Inodes {
			fmt.Fprintf(w, "  ns %d #%-10d 0x%09x  %7d bytes  flags 0x%02x  %s\n", in.Namespace, in.Number, in.Inode, in.Size, in.Flags, in.What)
		}
	} else {
		fmt.Fprintf(w, "container:          BlockFS (XTS-AES-256), metadata magic 0x%08X, NVChip size %d\n", info.Magic, info.NVSize)
	}
	for _, f := range info.Findings {
		fmt.Fprintf(w, "WARNING:            %s\n", f)
	}
}

func sourceFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "state", Usage: "encrypted state `IMAGE`"},
		&cli.StringFlag{Name: "nvchip", Usage: "raw NVChip `FILE` instead of a state image"},
	}, keyFlags("", "state key")...)
}

type inspectOutput struct {
	Container *pipeline.ContainerInfo `json:"container,omitempty"`
	TPM       *pipeline.Report        `json:"tpm"`
	Fields    []nv.FieldValue         `json:"fields,omitempty"`
}

var fieldsFlag = &cli.BoolFlag{Name: "fields", Usage: "also list every field of the fixed NV structures (secrets as fingerprints)"}

func (e *cmdEnv) inspectCmd() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "describe a state image or NVChip: container, TPM state, NV indices, certificates, EKs",
		UsageText: "vtpm-mfg inspect (--state IMAGE (--key-file K | --key-env NAME) | --nvchip FILE) [--profile P] [--fields] [--json]",
		Description: `Seeds and proofs are never printed, only fingerprints of them.

Examples:
  vtpm-mfg inspect --state state.img --key-file state.key
  vtpm-mfg inspect --state state.img --key-env STATE_KEY --json`,
		Flags: append(sourceFlags(), profileFlag(""), jsonFlag, fieldsFlag),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			im, info, err := e.loadImage(c)
			if err != nil {
				return err
			}
			rep, err := pipeline.Describe(im)
			if err != nil {
				return err
			}
			var fields []nv.FieldValue
			if c.Bool("fields") {
				fields = im.Fields()
			}
			if c.Bool("json") {
				return e.printJSON(inspectOutput{Container: info, TPM: rep, Fields: fields})
			}
			defer func() {
				if len(fields) > 0 {
					fmt.Fprintln(e.stdout, "fixed NV fields:")
					for _, f := range fields {
						fmt.Fprintf(e.stdout, "  0x%04x %-18s %-26s %s\n", f.Offset, f.Region, f.Name, f)
					}
				}
			}()
			if info != nil {
				printContainer(e.stdout, info)
			}
			fmt.Fprint(e.stdout, rep.Text())
			return nil
		},
	}
}

func (e *cmdEnv) nvCmd() *cli.Command {
	return &cli.Command{
		Name:  "nv",
		Usage: "work with raw NVChip files",
		Subcommands: []*cli.Command{
			{
				Name:      "new",
				Usage:     "write a freshly manufactured NVChip (new random seeds, no EK certificates)",
				UsageText: "vtpm-mfg nv new [--profile P] -o NVCHIP [--force]",
				Description: `Writes what TPM_Manufacture of the chosen build writes (mode 0600).

Example:
  vtpm-mfg nv new --profile svsm-poc -o NVChip`,
				Flags: []cli.Flag{profileFlag(nv.DefaultProfile),
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "NVChip `FILE` to create"}, forceFlag},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					if err := need(c, "output"); err != nil {
						return err
					}
					p, err := nv.Get(c.String("profile"))
					if err != nil {
						return usagef("%v", err)
					}
					im, err := nv.Manufacture(p)
					if err != nil {
						return err
					}
					b := im.Bytes()
					defer clear(b)
					if err := writeOut(c.String("output"), b, true, c.Bool("force")); err != nil {
						return err
					}
					fmt.Fprintf(e.stderr, "wrote a manufactured %s NVChip to %s\n", p.Name, c.String("output"))
					return nil
				},
			},
			{
				Name:      "inspect",
				Usage:     "describe an NVChip (same as inspect --nvchip)",
				UsageText: "vtpm-mfg nv inspect --nvchip FILE [--profile P] [--fields] [--json]",
				Description: `Example:
  vtpm-mfg nv inspect --nvchip NVChip --fields`,
				Flags:  append(sourceFlags(), profileFlag(""), jsonFlag, fieldsFlag),
				Action: e.inspectCmd().Action,
			},
		},
	}
}

func (e *cmdEnv) ekCmd() *cli.Command {
	return &cli.Command{
		Name:  "ek",
		Usage: "derive endorsement keys",
		Subcommands: []*cli.Command{{
			Name:      "public",
			Usage:     "print the EK public key the image's TPM will create",
			UsageText: "vtpm-mfg ek public (--nvchip FILE | --state IMAGE --key-file K) --alg rsa2048|ecc-p256 [--profile P] [--format pem|tpm2b] [-o FILE]",
			Description: `Derives the EK from the endorsement seed exactly as TPM2_CreatePrimary
with the TCG default template (L-1 or L-2) does in the chosen TPM build.
--format tpm2b writes the marshaled TPM2B_PUBLIC, byte for byte what
tpm2_createek -u writes.

Example:
  vtpm-mfg ek public --state state.img --key-file state.key --alg rsa2048`,
			Flags: append(sourceFlags(), profileFlag(""),
				&cli.StringFlag{Name: "alg", Usage: "EK type: a template name (L-1, L-2, H-1, H-2, H-3, H-6, H-7) or rsa2048, ecc-p256, ecc-p384, rsa3072, rsa4096"},
				&cli.StringFlag{Name: "format", Value: "pem", Usage: "pem (SubjectPublicKeyInfo) or tpm2b"},
				&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` instead of standard output"},
				forceFlag),
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				if err := need(c, "alg"); err != nil {
					return err
				}
				alg, err := ek.ParseAlg(c.String("alg"))
				if err != nil {
					return usagef("%v", err)
				}
				format := c.String("format")
				if format != "pem" && format != "tpm2b" {
					return usagef("ek public: --format must be pem or tpm2b")
				}
				if c.String("output") != "" && format == "tpm2b" && c.String("output") == "-" {
					return usagef("ek public: --output -: the tpm2b format is binary and is never written to standard output; give a file name")
				}
				im, _, err := e.loadImage(c)
				if err != nil {
					return err
				}
				k, pub, err := pipeline.DerivePublic(im, alg)
				if err != nil {
					return err
				}
				var out []byte
				if format == "tpm2b" {
					out = k.TPM2BPublic()
				} else {
					der, err := x509.MarshalPKIXPublicKey(pub)
					if err != nil {
						return err
					}
					out = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
				}
				if o := c.String("output"); o != "" && o != "-" {
					return writeOut(o, out, false, c.Bool("force"))
				}
				_, err = e.stdout.Write(out)
				return err
			},
		}},
	}
}

func (e *cmdEnv) caCmd() *cli.Command {
	return &cli.Command{
		Name:  "ca",
		Usage: "a throwaway certificate authority for trying the tool",
		Subcommands: []*cli.Command{{
			Name:      "init",
			Usage:     "create a self-signed CA certificate and key",
			UsageText: "vtpm-mfg ca init --out-cert FILE --out-key FILE [--subject CN] [--rsa] [--days N]",
			Description: `For evaluation and tests: a production EK CA key belongs in an HSM or
KMS (see manufacture --ca-key). ECDSA P-384 by default, RSA-3072 with --rsa.
The key file is written with mode 0600; existing files are never replaced.

Example:
  vtpm-mfg ca init --out-cert ca.pem --out-key ca.key --subject "Example EK CA"`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out-cert", Usage: "CA certificate `FILE` (PEM) to create"},
				&cli.StringFlag{Name: "out-key", Usage: "CA private key `FILE` (PEM, PKCS#8) to create"},
				&cli.StringFlag{Name: "subject", Value: "vtpm-mfg test EK CA", Usage: "common name of the CA"},
				&cli.BoolFlag{Name: "rsa", Usage: "RSA-3072 key (PKCS#1 v1.5 signatures) instead of ECDSA P-384"},
				&cli.IntFlag{Name: "days", Value: 3650, Usage: "validity in days"},
			},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				if err := need(c, "out-cert", "out-key"); err != nil {
					return err
				}
				certPath, keyPath := c.String("out-cert"), c.String("out-key")
				if sameFile(certPath, keyPath) {
					return usagef("ca init: --out-cert and --out-key must differ")
				}
				if c.Int("days") < 1 {
					return usagef("ca init: --days must be positive")
				}
				for _, p := range []string{certPath, keyPath} {
					if _, err := os.Lstat(p); err == nil {
						return fmt.Errorf("%s: %w; choose another name", p, atomicfile.ErrExists)
					}
				}
				cert, key, err := ekcert.NewSelfSigned(c.String("subject"), c.Bool("rsa"), time.Duration(c.Int("days"))*24*time.Hour)
				if err != nil {
					return err
				}
				kp, err := ekcert.EncodeKey(key)
				if err != nil {
					return err
				}
				defer clear(kp)
				if err := atomicfile.WriteSecret(keyPath, kp, false); err != nil {
					return err
				}
				if err := writeOut(certPath, ekcert.EncodeCert(cert), false, false); err != nil {
					os.Remove(keyPath)
					return err
				}
				fmt.Fprintf(e.stderr, "created CA %q: certificate %s, key %s (mode 0600)\n", cert.Subject.CommonName, certPath, keyPath)
				return nil
			},
		}},
	}
}

var persistFlag = &cli.StringFlag{Name: "persist", Usage: "also make keys persistent, comma-separated: `ek` (each certified EK at its TCG Provisioning Guidance handle: RSA 0x81010001, ECC 0x81010002), srk (the storage root key systemd creates at 0x81000001: ECC NIST P-256, SHA-256, AES-128-CFB, restricted decrypt, noDA, attributes 0x00030472)"}

// parsePersist reads --persist; notes go to standard error.
func (e *cmdEnv) parsePersist(c *cli.Context, algs []ek.Alg) (pipeline.Persist, error) {
	p, notes, err := pipeline.ParsePersist(c.String("persist"), algs)
	if err != nil {
		return p, usagef("%s: --persist: %v", c.Command.FullName(), err)
	}
	for _, n := range notes {
		fmt.Fprintf(e.stderr, "note: --persist ek: %s\n", n)
	}
	return p, nil
}

// checkAlgs refuses EK types the profile's TPM build cannot create.
func checkAlgs(p *nv.Profile, algs []ek.Alg) error {
	for _, a := range algs {
		if err := pipeline.CheckEK(p, a); err != nil {
			return usagef("--ek: %v", err)
		}
	}
	return nil
}

func parseAlgs(s string) ([]ek.Alg, error) {
	algs, err := ek.ParseAlgs(s)
	if err != nil {
		return nil, usagef("--ek: %v", err)
	}
	return algs, nil
}

func certFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "ca-cert", Usage: "issuing CA certificate `FILE` (PEM; intermediates up to the root may follow it)"},
		&cli.StringFlag{Name: "ca-key", Usage: "CA private key: a PEM `FILE`, or in a -tags pkcs11 build a URI such as pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=ca;object=ekca?pin-source=/run/ca.pin (use pin-source, not pin-value, to keep the PIN off the command line)"},
		&cli.StringFlag{Name: "not-before", Usage: "certificate validity start, RFC 3339 (default: now)"},
		&cli.StringFlag{Name: "not-after", Usage: "certificate validity end, RFC 3339 (default: 9999-12-31T23:59:59Z, as TPM vendors do)"},
		&cli.BoolFlag{Name: "no-lock", Usage: "do not write-lock the certificate index (NV_WriteLock)"},
		&cli.BoolFlag{Name: "store-chain", Usage: "also store the CA certificates in NV indices 0x01C00100.."},
	}
}

func (e *cmdEnv) certOptions(c *cli.Context) (pipeline.CertOptions, error) {
	var o pipeline.CertOptions
	var err error
	parse := func(flag string) (time.Time, error) {
		s := c.String(flag)
		if s == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return t, usagef("--%s: %q is not an RFC 3339 time (e.g. 2026-01-01T00:00:00Z)", flag, s)
		}
		return t, nil
	}
	if o.NotBefore, err = parse("not-before"); err != nil {
		return o, err
	}
	if o.NotAfter, err = parse("not-after"); err != nil {
		return o, err
	}
	switch {
	case !o.NotBefore.IsZero() && !o.NotAfter.IsZero() && !o.NotAfter.After(o.NotBefore):
		return o, usagef("--not-after %s is not after --not-before %s", c.String("not-after"), c.String("not-before"))
	case o.NotBefore.IsZero() && !o.NotAfter.IsZero() && !o.NotAfter.After(time.Now()):
		return o, usagef("--not-after %s is not in the future, and the certificate starts now (give --not-before too for a back-dated one)", c.String("not-after"))
	}
	// A PIN in the URI would sit in the process list: refuse it before
	// anything is done with the URI (which is not echoed).
	if strings.Contains(strings.ToLower(c.String("ca-key")), "pin-value") {
		return o, usagef("--ca-key: a pin-value in a PKCS#11 URI puts the PIN in the process list; use pin-source=/path/to/pin (a file readable only by you) instead")
	}
	o.NoLock, o.StoreChain = c.Bool("no-lock"), c.Bool("store-chain")
	o.CA, err = ekcert.LoadCA(c.Context, c.String("ca-cert"), c.String("ca-key"), time.Now())
	return o, err
}

func (e *cmdEnv) manufactureCmd() *cli.Command {
	return &cli.Command{
		Name:      "manufacture",
		Usage:     "create a new vTPM state image with CA-signed EK certificates",
		UsageText: "vtpm-mfg manufacture (--key-file K | --key-env NAME) --ca-cert C --ca-key CK -o IMAGE [options]",
		Description: `Manufactures a TPM offline: fresh random seeds and proofs (the image the
TPM's own TPM_Manufacture writes for the chosen build), the EKs derived
from the new endorsement seed (TCG templates L-1 RSA-2048 and L-2 ECC
P-256 by default; --ek adds the high-range H-1, H-2, H-3 ECC P-384, H-6
RSA-3072 and H-7 RSA-4096), one certificate per EK signed by your CA,
stored in the template's platform NV index (0x01C00002, 0x01C0000A,
0x01C00012..0x01C0001E; attributes 0x42072001, then WRITTEN, and
WRITELOCKED unless --no-lock), and the NVChip encrypted into a new state
image. With --persist ek,srk the EKs are also persistent at 0x81010001
(RSA) and 0x81010002 (ECC), and systemd's storage root key at
0x81000001, as TPM2_EvictControl stores them. Nothing is written unless
every step succeeds.

` + devIDHelp + `
--device-serial is required with them; --cert-dir also gets iak.crt.pem,
iak.pub.pem, idevid.crt.pem, idevid.pub.pem and platform.pem.

The state image is the container the profile's SVSM reads:
  svsm-poc   BlockFS: XTS-AES-256 sectors, 16 MiB sparse by default
  svsm-2026  CocoonFS v1 (cocoon-tpm-storage 0.1.4): the NVChip at inode
             0x100000000 and the "manufactured" marker COCONUT-SVSM at
             0x100000001, so the SVSM boots this TPM instead of making its
             own; 8 MiB, SHA-256 and AES-128 by default as the upstream
             documentation formats (--cocoonfs-strength 192|256 for more),
             free space random-filled as the SVSM's mkfs does.
The key is the secret the key broker releases to the SVSM, as it is.
Another pairing needs --container. --format nvchip writes the raw NVChip.

Examples:
  vtpm-mfg manufacture --key-file state.key --ca-cert ca.pem --ca-key ca.key -o state.img
  vtpm-mfg manufacture --profile svsm-2026 --key-file state.key \
      --ca-cert ca.pem --ca-key ca.key -o state.img
  vtpm-mfg manufacture --key-env STATE_KEY --ca-cert ca.pem --ca-key ca.key \
      -o state.img --cert-dir certs --json
  vtpm-mfg manufacture --key-file state.key --ca-cert ca.pem --ca-key ca.key -o state.img \
      --ek L-1,L-2,H-3,H-7 --persist ek,srk
  vtpm-mfg manufacture --key-file state.key --ca-cert ca.pem --ca-key ca.key -o state.img \
      --iak ecc-p256 --idevid ecc-p256 --device-serial vm-0001 --cert-dir certs
  vtpm-mfg manufacture --key-file state.key --ca-cert ca.pem --ca-key ca.key -o platform.img \
      --platform-cert --platform-manufacturer "Example Corp" --device-serial vm-0002
  vtpm-mfg manufacture --profile svsm-2026 --format nvchip --ca-cert ca.pem --ca-key ca.key -o NVChip`,
		Flags: append(append(append(keyFlags("", "state key"), certFlags()...), devIDFlags("the device serial `S` in IAK/IDevID certificates (subject serialNumber, HardwareModuleName); required with --iak/--idevid")...),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "state image (or NVChip) `FILE` to create"},
			profileFlag(nv.DefaultProfile),
			&cli.StringFlag{Name: "ek", Value: "rsa2048,ecc-p256", Usage: "EK types to certify, comma-separated: template names L-1 L-2 H-1 H-2 H-3 H-6 H-7 or rsa2048 (L-1), ecc-p256 (L-2), ecc-p384 (H-3), rsa3072 (H-6), rsa4096 (H-7); H-4 and H-5 need SHA-512 / SM3, which the SVSM builds lack"},
			&cli.StringFlag{Name: "format", Value: "state", Usage: "state (encrypted state image) or nvchip (raw NV image)"},
			containerFlag, strengthFlag, zeroFreeFlag,
			persistFlag,
			&cli.StringFlag{Name: "cert-dir", Usage: "also write the certificates and EK public keys (PEM) into `DIR`"},
			sizeFlag, forceFlag, jsonFlag),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if err := need(c, "output", "ca-cert", "ca-key"); err != nil {
				return err
			}
			p, err := nv.Get(c.String("profile"))
			if err != nil {
				return usagef("%v", err)
			}
			devid, err := parseDevID(c, p, false)
			if err != nil {
				return err
			}
			if devid.Any() && devid.DeviceSerial == "" {
				return usagef("--device-serial is required with --iak/--idevid/--platform-cert: it names the device in their certificates")
			}
			algs, err := parseAlgs(c.String("ek"))
			if err != nil {
				return err
			}
			if err := checkAlgs(p, algs); err != nil {
				return err
			}
			format := c.String("format")
			if format != "state" && format != "nvchip" {
				return usagef("manufacture: --format must be state or nvchip")
			}
			out := c.String("output")
			var key []byte
			var cf container.Format
			var co pipeline.CreateOptions
			if format == "state" {
				if co, err = createOptions(c); err != nil {
					return err
				}
				if cf, err = resolveContainer(c, p); err != nil {
					return err
				}
				if err := checkCreate(c, cf, co); err != nil {
					return err
				}
				if key, err = e.loadKey(c, ""); err != nil {
					return err
				}
				defer keyfile.Wipe(key)
			} else if c.String("key-file") != "" || c.String("key-env") != "" {
				return usagef("manufacture: --format nvchip writes an unencrypted NVChip; do not give a state key")
			} else {
				for _, fl := range []string{"size", "container", "cocoonfs-strength", "cocoonfs-zero-free"} {
					if c.IsSet(fl) {
						return usagef("manufacture: --%s applies to state images, and --format nvchip writes a raw NVChip; drop the flag", fl)
					}
				}
			}
			// Every output is checked before any work and written all
			// together, or not at all.
			persist, err := e.parsePersist(c, algs)
			if err != nil {
				return err
			}
			job := pipeline.Job{Profile: p, Algs: algs, Container: cf, Create: co, Key: key, Output: out, CertDir: c.String("cert-dir"), Force: c.Bool("force"), Persist: persist, DevID: devid}
			if err := job.CheckOutputs(); err != nil {
				return err
			}
			if job.Cert, err = e.certOptions(c); err != nil {
				return err
			}
			m, err := job.Run()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return e.printJSON(m)
			}
			what := format
			if cf != nil {
				what = cf.Name() + " state image"
			}
			fmt.Fprintf(e.stdout, "manufactured a %s TPM into %s (%s)\n", p.Name, out, what)
			for _, mc := range m.EKs {
				fmt.Fprintf(e.stdout, "  %-9s EK %s, certificate serial %s at NV index %s\n", mc.Alg, mc.KeySHA256, mc.Serial, mc.Index)
			}
			printDevIDs(e, m.DevIDs)
			if format == "nvchip" {
				fmt.Fprintf(e.stdout, `To use it with upstream SVSM, pack it (vtpm-mfg pack --container cocoonfs),
or store it in the CocoonFS state image as inode 0x100000000 with the 12
bytes "COCONUT-SVSM" in inode 0x100000001 (without that marker the SVSM
re-manufactures the TPM).
`)
			}
			return nil
		},
	}
}

func (e *cmdEnv) installCertCmd() *cli.Command {
	return &cli.Command{
		Name:      "install-ekcert",
		Usage:     "put an EK certificate into an existing state image",
		UsageText: "vtpm-mfg install-ekcert --state IMAGE (--key-file K | --key-env NAME) (--cert FILE | --ca-cert C --ca-key CK) [--alg A] [--force]",
		Description: `With --cert, installs a certificate issued elsewhere after checking that it
certifies this image's EK (never overridable) and meets the TCG EK profile
(--force accepts a non-compliant one). With --ca-cert/--ca-key, issues a
new certificate. An existing certificate is replaced and its index keeps
its attributes. The image is rewritten atomically, or not at all.

Examples:
  vtpm-mfg install-ekcert --state state.img --key-file state.key --cert ek-rsa.der
  vtpm-mfg install-ekcert --state state.img --key-file state.key --alg ecc-p256 \
      --ca-cert ca.pem --ca-key ca.key`,
		Flags: append(append(keyFlags("", "state key"), certFlags()...),
			&cli.StringFlag{Name: "state", Usage: "state `IMAGE` to change"},
			&cli.StringFlag{Name: "cert", Usage: "certificate `FILE` to install (PEM or DER)"},
			&cli.StringFlag{Name: "alg", Value: "rsa2048", Usage: "which EK: a template name (L-1, L-2, H-1, H-2, H-3, H-6, H-7) or rsa2048, ecc-p256, ecc-p384, rsa3072, rsa4096"},
			profileFlag(""),
			&cli.BoolFlag{Name: "force", Usage: "install a certificate that deviates from the TCG EK profile (it must still certify this TPM's EK)"},
			jsonFlag),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if err := need(c, "state"); err != nil {
				return err
			}
			alg, err := ek.ParseAlg(c.String("alg"))
			if err != nil {
				return usagef("%v", err)
			}
			certFile, caCert := c.String("cert"), c.String("ca-cert")
			if (certFile == "") == (caCert == "") {
				return usagef("install-ekcert: give --cert FILE, or --ca-cert and --ca-key to issue one")
			}
			if caCert != "" {
				if err := need(c, "ca-key"); err != nil {
					return err
				}
			}
			var der []byte
			var opts pipeline.CertOptions
			if certFile != "" {
				certs, err := ekcert.ReadCertificates(certFile)
				if err != nil {
					return err
				}
				der = certs[0].Raw
			} else if opts, err = e.certOptions(c); err != nil {
				return err
			}
			key, err := e.loadKey(c, "")
			if err != nil {
				return err
			}
			defer keyfile.Wipe(key)
			state := c.String("state")
			in := pipeline.Install{Alg: alg, Profile: c.String("profile"), CertDER: der, CertName: certFile, Force: c.Bool("force"), Lock: !c.Bool("no-lock")}
			if der == nil {
				in.Issue = &opts
			}
			summary, warnings, err := pipeline.InstallCert(state, key, in)
			if err != nil {
				return err
			}
			e.warn(state, warnings)
			if c.Bool("json") {
				return e.printJSON(map[string]string{"state": state, "alg": string(alg), "nv_index": fmt.Sprintf("0x%08x", pipeline.CertIndex(alg)), "summary": summary})
			}
			fmt.Fprintf(e.stdout, "%s in %s (NV index 0x%08x)\n", summary, state, pipeline.CertIndex(alg))
			return nil
		},
	}
}

type verifyOutput struct {
	OK       bool     `json:"ok"`
	Profile  string   `json:"profile,omitempty"`
	Findings []string `json:"findings"`
}

func (e *cmdEnv) verifyCmd() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check a state image offline before deploying it",
		UsageText: "vtpm-mfg verify (--state IMAGE (--key-file K | --key-env NAME) | --nvchip FILE) --ca-cert C [--ek ALGS] [--json]",
		Description: `Checks that the image opens with the key (CocoonFS: every block
authenticated), is the container the TPM build's SVSM reads, holds the
"manufactured" marker where the SVSM needs one, and an NV image valid for
its TPM build, and for each EK type: the certificate is present in its NV
index with the attributes a manufacturer sets, meets the TCG EK profile,
names this TPM's manufacturer and firmware, chains to the CA, and
certifies exactly the EK this TPM will derive. Device identity keys
present (IAK at 0x81020001, IDevID at 0x81020000, certificates at NV
0x01C90100 / 0x01C90200) are checked too: each persisted key is the one
the TPM derives for its template, and its certificate certifies it, meets
the DevID profile and chains to the CA; --iak/--idevid require them (of
that type), --device-serial the serial their certificates name. Prints one
line per finding and exits 1 if there is any.

Examples:
  vtpm-mfg verify --state state.img --key-file state.key --ca-cert ca.pem
  vtpm-mfg verify --state state.img --key-file state.key --ca-cert ca.pem \
      --iak ecc-p256 --idevid ecc-p256 --device-serial vm-0001`,
		Flags: append(sourceFlags(), profileFlag(""),
			&cli.StringFlag{Name: "ca-cert", Usage: "CA certificate `FILE`(s) to trust (PEM; the root last if several)"},
			&cli.StringFlag{Name: "ek", Value: "rsa2048,ecc-p256", Usage: "EK types that must be certified (template names or aliases, as for manufacture --ek)"},
			jsonFlag,
			&cli.StringFlag{Name: "iak", Usage: "an IAK of type `ALG` (rsa2048, rsa3072, ecc-p256, ecc-p384) must be present"},
			&cli.StringFlag{Name: "idevid", Usage: "an IDevID of type `ALG` (rsa2048, rsa3072, ecc-p256, ecc-p384) must be present"},
			&cli.StringFlag{Name: "device-serial", Usage: "the device serial `S` the IAK/IDevID (and platform) certificates must name"},
			&cli.BoolFlag{Name: "platform-cert", Usage: "a platform certificate held by the RSA EK certificate must be at NV 0x01C08000"}),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if err := need(c, "ca-cert"); err != nil {
				return err
			}
			algs, err := parseAlgs(c.String("ek"))
			if err != nil {
				return err
			}
			devid, err := parseDevID(c, nil, false)
			if err != nil {
				return err
			}
			certs, err := ekcert.ReadCertificates(c.String("ca-cert"))
			if err != nil {
				return err
			}
			im, info, err := e.loadImage(c)
			var out verifyOutput
			if err != nil {
				if _, ok := err.(*usageError); ok {
					return err
				}
				out.Findings = []string{err.Error()}
			} else {
				out.Profile = im.Profile.Name
				out.Findings = append(pipeline.ImageFindings(im, info), pipeline.Verify(im, pipeline.VerifyOptions{CA: certs[len(certs)-1:], Intermediates: certs[:len(certs)-1], Algs: algs, DevID: devid})...)
			}
			out.OK = len(out.Findings) == 0
			if out.Findings == nil {
				out.Findings = []string{}
			}
			if c.Bool("json") {
				if err := e.printJSON(out); err != nil {
					return err
				}
			} else if out.OK {
				fmt.Fprintf(e.stdout, "OK: %s TPM, EK certificates for %s present, compliant, chained to the CA and certifying the derived EKs\n", out.Profile, c.String("ek"))
				if ids := pipeline.DeviceIdentityIn(im); len(ids) > 0 {
					fmt.Fprintf(e.stdout, "OK: %s present, compliant, chained to the CA and bound to this TPM\n", strings.Join(ids, ", "))
				}
			} else {
				for _, f := range out.Findings {
					fmt.Fprintf(e.stdout, "FAIL: %s\n", f)
				}
			}
			if !out.OK {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}
