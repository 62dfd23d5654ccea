package main

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/urfave/cli/v2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/attest"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/fleet"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
)

func (e *cmdEnv) attestCmd() *cli.Command {
	return &cli.Command{
		Name:        "attest",
		Usage:       "predict and verify upstream SVSM's SEV-SNP attestation of the vTPM",
		Subcommands: []*cli.Command{e.attestManifestCmd(), e.attestVerifyCmd()},
	}
}

// attestSource names where the image came from, for messages.
func attestSource(c *cli.Context) string {
	if s := c.String("state"); s != "" {
		return s
	}
	return c.String("nvchip")
}

// imageManifest is the vTPM manifest of the image given with --state or
// --nvchip.
func (e *cmdEnv) imageManifest(c *cli.Context) ([]byte, string, error) {
	im, _, err := e.loadImage(c)
	if err != nil {
		return nil, "", err
	}
	m, err := pipeline.AttestManifest(im)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", attestSource(c), err)
	}
	return m, im.Profile.Name, nil
}

type attestManifestOutput struct {
	Source      string `json:"source"`
	Profile     string `json:"profile"`
	Output      string `json:"output,omitempty"`
	Size        int    `json:"size"`
	ServiceGUID string `json:"service_guid"`
	SHA512      string `json:"manifest_sha512"`
}

func (e *cmdEnv) attestManifestCmd() *cli.Command {
	return &cli.Command{
		Name:      "manifest",
		Usage:     "write the vTPM service manifest this TPM's SVSM will report, and print its SHA-512",
		UsageText: "vtpm-mfg attest manifest (--state IMAGE (--key-file K | --key-env NAME) | --nvchip FILE) [--profile P] [-o FILE [--force]] [--json]",
		Description: `Upstream SVSM (profile svsm-2026) answers SVSM_ATTEST_SINGLE_SERVICE for
the vTPM (GUID c476f1eb-0123-45a5-9641-b4e7dde5bfe3, manifest version 0)
with an SEV-SNP report whose REPORT_DATA is SHA-512(nonce || manifest);
the manifest is the TPMT_PUBLIC (no TPM2B size field) of the EK its TPM
creates for the TCG L-1 template (RSA-2048), whether or not that EK is
certified. This command derives it from the image's endorsement seed:
the same bytes as "ek public --alg rsa2048 --format tpm2b" without its
first two. The proof-of-concept SVSM (profile svsm-poc) has no
attestation protocol: for its images the command says so and exits 1.

Examples:
  vtpm-mfg nv new --profile svsm-2026 -o NVChip.2026
  vtpm-mfg attest manifest --nvchip NVChip.2026 -o vtpm-manifest.bin
  vtpm-mfg attest manifest --nvchip NVChip.2026 --json`,
		Flags: append(sourceFlags(), profileFlag(""),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the manifest (binary) to `FILE`"},
			forceFlag, jsonFlag),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			out := c.String("output")
			if out == "-" {
				return usagef("attest manifest: --output -: the manifest is binary and is never written to standard output; give a file name")
			}
			m, profile, err := e.imageManifest(c)
			if err != nil {
				return err
			}
			if out != "" {
				if err := writeOut(out, m, false, c.Bool("force")); err != nil {
					return err
				}
			}
			d := attest.Digest(m)
			o := attestManifestOutput{Source: attestSource(c), Profile: profile, Output: out, Size: len(m), ServiceGUID: attest.VTPMGUID.String(), SHA512: hex.EncodeToString(d[:])}
			if c.Bool("json") {
				return e.printJSON(o)
			}
			if out != "" {
				fmt.Fprintf(e.stderr, "wrote the %d-byte vTPM manifest of %s to %s\n", len(m), o.Source, out)
			}
			fmt.Fprintf(e.stdout, "%s  vTPM manifest SHA-512 (%s, L-1 EK TPMT_PUBLIC, %d bytes)\n", o.SHA512, o.Source, len(m))
			return nil
		},
	}
}

// hexFlag parses a fixed-size hex option (nil when not given).
func hexFlag(c *cli.Context, name string, size int) ([]byte, error) {
	s := c.String(name)
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(strings.TrimPrefix(strings.ToLower(s), "0x"))
	if err != nil || len(b) != size {
		return nil, usagef("attest verify: --%s takes %d bytes in hex (%d hex digits), as the report field is", name, size, 2*size)
	}
	return b, nil
}

// parseMinTCB reads --min-tcb: bl=N,tee=N,snp=N,ucode=N (the Milan and
// Genoa TCB_VERSION layout, as go-sev-guest composes it) or the raw 64-bit
// TCB_VERSION in hex (0x...), every byte of which is one component.
func parseMinTCB(s string) (uint64, error) {
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		v, err := strconv.ParseUint(s[2:], 16, 64)
		if err != nil {
			return 0, usagef("attest verify: --min-tcb %q: not a 64-bit hex TCB_VERSION", s)
		}
		return v, nil
	}
	var p kds.TCBParts
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		n, err := strconv.ParseUint(v, 10, 8)
		if !ok || err != nil || seen[k] {
			return 0, usagef("attest verify: --min-tcb %q: give bl=N,tee=N,snp=N,ucode=N (each 0-255, at most once) or a raw TCB_VERSION 0x...", s)
		}
		seen[k] = true
		switch k {
		case "bl":
			p.BlSpl = uint8(n)
		case "tee":
			p.TeeSpl = uint8(n)
		case "snp":
			p.SnpSpl = uint8(n)
		case "ucode":
			p.UcodeSpl = uint8(n)
		default:
			return 0, usagef("attest verify: --min-tcb: unknown component %q (bl, tee, snp, ucode; for Turin's layout give the raw 0x... value)", k)
		}
	}
	v, err := kds.ComposeTCBParts(p)
	if err != nil {
		return 0, usagef("attest verify: --min-tcb: %v", err)
	}
	return uint64(v), nil
}

// attestPolicy reads the optional policy flags.
func attestPolicy(c *cli.Context) (attest.Policy, error) {
	var p attest.Policy
	var err error
	if p.Measurement, err = hexFlag(c, "measurement", abi.MeasurementSize); err != nil {
		return p, err
	}
	if p.ChipID, err = hexFlag(c, "chip-id", abi.ChipIDSize); err != nil {
		return p, err
	}
	if p.ReportID, err = hexFlag(c, "report-id", abi.ReportIDSize); err != nil {
		return p, err
	}
	if s := c.String("min-tcb"); s != "" {
		v, err := parseMinTCB(s)
		if err != nil {
			return p, err
		}
		p.MinTCB = &v
	}
	if s := c.String("policy"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			return p, usagef("attest verify: --policy %q: the guest POLICY as a number (e.g. 0x30000)", s)
		}
		if _, err := abi.ParseSnpPolicy(v); err != nil {
			return p, usagef("attest verify: --policy %s is not a valid SEV-SNP guest policy: %v", s, err)
		}
		p.GuestPolicy = &v
	}
	return p, nil
}

// attestExpected reads the identity the manifest must be: an image, an EK
// certificate or a fleet.
func (e *cmdEnv) attestExpected(c *cli.Context) ([]attest.Expected, error) {
	n := 0
	for _, f := range []string{"state", "nvchip", "ek-cert", "fleet"} {
		if c.String(f) != "" {
			n++
		}
	}
	if n != 1 {
		return nil, usagef("attest verify: give the expected vTPM with exactly one of --state IMAGE (with its key), --nvchip FILE, --ek-cert FILE or --fleet DIR")
	}
	switch {
	case c.String("ek-cert") != "":
		p := c.String("ek-cert")
		b, err := pipeline.ReadEvidenceFile(p, "EK certificate")
		if err != nil {
			return nil, err
		}
		certs, err := ekcert.ParseCertificates(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		x, err := pipeline.ExpectedFromCert(p, certs[0])
		if err != nil {
			return nil, err
		}
		return []attest.Expected{x}, nil
	case c.String("fleet") != "":
		return fleet.AttestIdentities(c.String("fleet"))
	}
	m, _, err := e.imageManifest(c)
	if err != nil {
		return nil, err
	}
	return []attest.Expected{{Name: attestSource(c), SHA512: attest.Digest(m)}}, nil
}

func (e *cmdEnv) attestVerifyCmd() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "verify an SEV-SNP attestation report of the vTPM offline against the manufactured identity",
		UsageText: "vtpm-mfg attest verify --report FILE --nonce FILE --manifest FILE [--certs FILE | --vcek FILE] (--state IMAGE (--key-file K | --key-env NAME) | --nvchip FILE | --ek-cert FILE | --fleet DIR) [--amd-roots FILE] [--measurement HEX] [--min-tcb TCB] [--policy N] [--chip-id HEX] [--report-id HEX] [--fetch] [--json]",
		Description: `Checks what a guest read from configfs-tsm (see the README for the
commands): the report (outblob) is signed by a VCEK or VLEK that chains to
AMD's ASK and ARK (go-sev-guest's embedded roots, or --amd-roots), is
version 2 or later, was made at VMPL 0 (by the SVSM: a guest kernel at
VMPL 1+ chooses its REPORT_DATA freely) for a guest whose policy does not
allow debugging, and its REPORT_DATA is SHA-512(nonce || manifest), the
nonce being the 64-byte inblob and the manifest the manifestblob: the vTPM
manifest (SVSM_ATTEST_SINGLE_SERVICE) or the table of all services
(SVSM_ATTEST_SERVICES), told apart by its header. Then the vTPM manifest
must be the EK expected: that of an image (--state with its key, or
--nvchip), of the TPM an EK certificate certifies (--ek-cert: the report
then vouches for that certificate's TPM), or of one VM of a fleet
(--fleet DIR, from its fleet.jsonl: the tool says which VM).

The VCEK (or VLEK) comes from the certificate table (--certs, the auxblob,
when the host provisioned one) or a file (--vcek, PEM or DER, e.g. from
AMD's key distribution service). Everything runs offline; --fetch lets
go-sev-guest download a missing VCEK, ASK and ARK from
https://kdsintf.amd.com instead (never needed when the certificates are
given). Optional requirements: --measurement (MEASUREMENT, 96 hex digits),
--min-tcb (REPORTED_TCB, bl=N,tee=N,snp=N,ucode=N in the Milan/Genoa
layout, or the raw 0x... TCB_VERSION, compared byte by byte), --policy
(POLICY exactly, e.g. 0x30000), --chip-id, --report-id.

Prints one line per failed check, naming it, and exits 1 if any failed;
exits 0 when the report is accepted. --json prints every check.

Examples:
  vtpm-mfg attest verify --report report.bin --nonce nonce.bin --manifest manifest.bin \
      --certs certs.bin --state state.img --key-file state.key
  vtpm-mfg attest verify --report report.bin --nonce nonce.bin --manifest manifest.bin \
      --vcek vcek.der --ek-cert certs/ek-rsa2048.crt.pem --policy 0x30000
  vtpm-mfg attest verify --report report.bin --nonce nonce.bin --manifest manifest.bin \
      --certs certs.bin --fleet fleet --json`,
		Flags: append(sourceFlags(), profileFlag(""),
			&cli.StringFlag{Name: "report", Usage: "the SNP attestation report `FILE` (configfs-tsm outblob, 1184 bytes)"},
			&cli.StringFlag{Name: "nonce", Usage: "the nonce `FILE` the guest wrote to inblob (64 bytes)"},
			&cli.StringFlag{Name: "manifest", Usage: "the manifestblob `FILE`: the vTPM manifest or the services table"},
			&cli.StringFlag{Name: "certs", Usage: "the certificate table `FILE` (configfs-tsm auxblob) holding the VCEK or VLEK"},
			&cli.StringFlag{Name: "vcek", Usage: "the VCEK (or VLEK) certificate `FILE`, PEM or DER"},
			&cli.StringFlag{Name: "ek-cert", Usage: "expect the TPM this RSA-2048 EK certificate `FILE` certifies (PEM or DER)"},
			&cli.StringFlag{Name: "fleet", Usage: "expect one of the VMs of the fleet `DIR` (vtpm-mfg batch --out-dir)"},
			&cli.StringFlag{Name: "amd-roots", Usage: "trust this ASK and ARK `FILE` (PEM, as AMD's key distribution service serves .../vcek/v1/PRODUCT/cert_chain) instead of the embedded AMD roots"},
			&cli.StringFlag{Name: "measurement", Usage: "require this launch MEASUREMENT (`HEX`, 48 bytes)"},
			&cli.StringFlag{Name: "min-tcb", Usage: "require REPORTED_TCB of at least `TCB`: bl=N,tee=N,snp=N,ucode=N or a raw 0x... TCB_VERSION"},
			&cli.StringFlag{Name: "policy", Usage: "require exactly this guest POLICY `N` (e.g. 0x30000)"},
			&cli.StringFlag{Name: "chip-id", Usage: "require this CHIP_ID (`HEX`, 64 bytes)"},
			&cli.StringFlag{Name: "report-id", Usage: "require this REPORT_ID (`HEX`, 32 bytes): one VM's launch"},
			&cli.BoolFlag{Name: "fetch", Usage: "download missing VCEK, ASK and ARK certificates from AMD's key distribution service (network)"},
			jsonFlag),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if err := need(c, "report", "nonce", "manifest"); err != nil {
				return err
			}
			if c.String("certs") != "" && c.String("vcek") != "" {
				return usagef("attest verify: give --certs FILE or --vcek FILE, not both")
			}
			pol, err := attestPolicy(c)
			if err != nil {
				return err
			}
			if c.String("state") == "" && c.String("nvchip") == "" && (c.String("key-file") != "" || c.String("key-env") != "") {
				return usagef("attest verify: --key-file and --key-env go with --state IMAGE")
			}
			opts := attest.Options{Fetch: c.Bool("fetch"), Policy: pol}
			if p := c.String("amd-roots"); p != "" {
				b, err := pipeline.ReadEvidenceFile(p, "AMD root certificates")
				if err != nil {
					return err
				}
				if opts.Roots, _, err = attest.RootsFromKDS(b); err != nil {
					return fmt.Errorf("%s: %v", p, err)
				}
			}
			var ev attest.Evidence
			for _, f := range []struct {
				flag, what string
				dst        *[]byte
			}{{"report", "attestation report", &ev.Report}, {"nonce", "nonce", &ev.Nonce}, {"manifest", "manifest", &ev.Manifest}, {"certs", "certificate table", &ev.CertTable}, {"vcek", "VCEK certificate", &ev.VCEK}} {
				if p := c.String(f.flag); p != "" {
					if *f.dst, err = pipeline.ReadEvidenceFile(p, f.what); err != nil {
						return err
					}
				}
			}
			if ev.VCEK != nil {
				certs, err := ekcert.ParseCertificates(ev.VCEK)
				if err != nil {
					return fmt.Errorf("%s: %w", c.String("vcek"), err)
				}
				ev.VCEK = certs[0].Raw
			}
			if opts.Expect, err = e.attestExpected(c); err != nil {
				return err
			}
			res := attest.Verify(ev, opts)
			if c.Bool("json") {
				if err := e.printJSON(res); err != nil {
					return err
				}
			} else if res.Accepted {
				fmt.Fprintf(e.stdout, "OK: the vTPM is %s: report signed by the %s of an AMD %s, version %d, VMPL 0, no debug; REPORT_DATA = SHA-512(nonce || %s)\n",
					res.VTPM, res.Signer, res.ProductLine, res.Report.Version, map[string]string{"vtpm": "vTPM manifest", "services": "services table"}[res.ManifestKind])
				fmt.Fprintf(e.stdout, "measurement: %s\n", res.Report.Measurement)
			} else {
				for _, f := range res.Failed() {
					fmt.Fprintf(e.stdout, "FAIL %s: %s\n", f.Name, f.Detail)
				}
			}
			if !res.Accepted {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}
