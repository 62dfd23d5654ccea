package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/fleet"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

const batchHelp = `Manufactures a fleet of vTPMs into DIR, in parallel (--jobs, default the
number of CPUs). Each VM gets DIR/NAME/ with state.img, state.key (0600,
unless the manifest names an existing key_file), the EK certificates and
public keys (PEM), manifest.json (as manufacture --json) and vm.json.

VMs come from --manifest FILE, a CSV with a header line or JSON lines, with
the columns name (required), profile, container, size, ek, key_file and
device_serial; or
from --count N --name PATTERN (names PATTERN % 1..N). Empty columns take the
command line's --profile, --container, --size and --ek. Every row is
checked (duplicate or invalid names, unknown columns or profiles,
unreadable key files) before any VM is made.

The columns disk and disk_key_file (a LUKS2 disk, and a key that unlocks it
now) enroll each VM's disk into its own vTPM as luks enroll does, with the
policy of --tpm2-public-key, --tpm2-pcrs or --no-pcr-policy and
--guest-systemd; vm.json records the keyslot and token, batch verify
checks that they still open the disk.

Crash-safe and resumable: a VM directory appears only when it is complete
(built under a temporary name, then renamed). Run the same command again
after a crash or Ctrl-C: finished VMs are re-verified, the others made.
Two runs on one DIR exclude each other.

--shard I/N takes a deterministic share (by a hash of the name), so that N
machines or a Kubernetes Indexed Job can split one manifest with no
coordination ("batch --shard $JOB_COMPLETION_INDEX/N"); copy the shards'
VM directories into one DIR and run "batch index" to rebuild the index.

At the end, DIR/fleet.jsonl lists every VM, and DIR/register/ holds:
  keylime/tpm_cert_store/  the CA certificates (the EK certificates' issuer)
  kbs.jsonl                per VM: name, broker resource path, raw key file
  kbs-commands.sh          a Trustee kbs-client set-resource line per VM, for
                           kbs-client 0.21 and later ("kbs-client --url
                           "$KBS_URL" config --admin-token-file TOKEN
                           set-resource --path P --resource-file F"; TOKEN is
                           --kbs-admin-token, or "$KBS_ADMIN_TOKEN", which the
                           script documents); kbs-client before 0.21 takes
                           "config --auth-private-key ADMIN_KEY" instead
  inventory.csv            name, profile, container, EK fingerprints, serials,
                           device serial, IAK and IDevID fingerprints
With --iak/--idevid every VM also gets an IAK and/or IDevID (see manufacture
--help), named in their certificates by its device serial: the manifest's
device_serial, else --device-serial with {name} replaced by the VM's name
(default: the VM's name). DIR/NAME/ then also holds iak.crt.pem,
idevid.crt.pem and their public keys, and register/keylime/ holds
  registrar.conf.d/50-vtpm-mfg.conf    tpm_identity for the registrar
  agents/NAME/50-vtpm-mfg-devid.conf   the VM's rust-keylime agent snippet
                                       (iak_handle, idevid_handle, iak_cert,
                                       idevid_cert)
--kbs-path sets the resource path template ({name} is replaced). Note that
upstream SVSM's attestation proxy currently asks for default/sample/test
for every VM.

Examples:
  vtpm-mfg batch --count 20 --name vm-%04d --out-dir fleet --ca-cert ca.pem --ca-key ca.key
  vtpm-mfg batch --manifest vms.csv --out-dir fleet --ca-cert ca.pem --ca-key ca.key --shard 0/4
  vtpm-mfg batch --count 4 --name vm-%04d --out-dir fleet --ca-cert ca.pem --ca-key ca.key \
      --iak ecc-p256 --idevid ecc-p256 --device-serial acme-{name}
  vtpm-mfg batch verify fleet --ca-cert ca.pem`

func (e *cmdEnv) batchCmd() *cli.Command {
	return &cli.Command{
		Name:        "batch",
		Usage:       "manufacture many vTPMs in one run, resumable, with a registration bundle",
		UsageText:   "vtpm-mfg batch (--manifest FILE | --count N --name PATTERN) --out-dir DIR --ca-cert C --ca-key CK [options]\n   vtpm-mfg batch verify DIR --ca-cert C\n   vtpm-mfg batch index DIR --ca-cert C",
		Description: batchHelp,
		Flags: append(append(append(certFlags(), luksBatchFlags()...), devIDFlags("device serial `TEMPLATE` for IAK/IDevID certificates where the manifest has no device_serial; {name} is the VM's name (default: {name})")...),
			&cli.StringFlag{Name: "manifest", Usage: "fleet `FILE`: CSV with a header, or JSON lines"},
			&cli.IntFlag{Name: "count", Usage: "make `N` VMs named by --name"},
			&cli.StringFlag{Name: "name", Value: "vm-%04d", Usage: "name `PATTERN` for --count"},
			&cli.StringFlag{Name: "out-dir", Usage: "fleet `DIR`"},
			&cli.IntFlag{Name: "jobs", Value: runtime.NumCPU(), Usage: "VMs made in parallel"},
			&cli.StringFlag{Name: "shard", Usage: "`I/N`: make only shard I (0-based) of N"},
			&cli.StringFlag{Name: "kbs-path", Value: fleet.DefaultKBSPath, Usage: "key broker resource path `TEMPLATE`"},
			kbsTokenFlag,
			profileFlag(nv.DefaultProfile),
			&cli.StringFlag{Name: "ek", Value: "rsa2048,ecc-p256", Usage: "EK types to certify, comma-separated (as for manufacture --ek)"},
			containerFlag, strengthFlag, zeroFreeFlag, sizeFlag,
			&cli.BoolFlag{Name: "json", Usage: "report progress and the summary as JSON lines on standard output"}),
		Action:      e.batchRun,
		Subcommands: []*cli.Command{e.batchVerifyCmd(), e.batchIndexCmd()},
	}
}

func parseShard(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("--shard %q: want I/N with 0 <= I < N", s)
	}
	return i, n, nil
}

func (e *cmdEnv) batchRun(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if err := need(c, "out-dir", "ca-cert", "ca-key"); err != nil {
		return err
	}
	var vms []fleet.VM
	var err error
	switch {
	case c.IsSet("manifest") && c.IsSet("count"):
		return usagef("batch: give --manifest or --count, not both")
	case c.IsSet("manifest"):
		if vms, err = fleet.ParseManifest(c.String("manifest")); err != nil {
			return err
		}
	case c.IsSet("count"):
		if vms, err = fleet.Generate(c.Int("count"), c.String("name")); err != nil {
			return usagef("batch: --count/--name: %v", err)
		}
	default:
		return usagef("batch: give --manifest FILE or --count N")
	}
	if s := c.String("shard"); s != "" {
		i, n, err := parseShard(s)
		if err != nil {
			return usagef("batch: %v", err)
		}
		vms = fleet.Shard(vms, i, n)
	}
	if c.Int("jobs") < 1 {
		return usagef("batch: --jobs must be at least 1")
	}
	algs, err := parseAlgs(c.String("ek"))
	if err != nil {
		return err
	}
	devid, err := parseDevID(c, nil, true)
	if err != nil {
		return err
	}
	co, err := createOptions(c)
	if err != nil {
		return err
	}
	certOpts, err := e.certOptions(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := fleet.Options{
		Dir: c.String("out-dir"), Jobs: c.Int("jobs"), Cert: certOpts, KBSPath: c.String("kbs-path"), KBSAdminToken: c.String("kbs-admin-token"),
		Defaults: fleet.Defaults{Profile: c.String("profile"), Container: c.String("container"), Size: co.Size, Algs: algs, Strength: co.Strength, ZeroFree: co.ZeroFree, DevID: devid},
	}
	used, err := fleet.Plan(vms, opts)
	if err != nil {
		if c.IsSet("manifest") {
			return fmt.Errorf("%s: %v; correct the manifest", c.String("manifest"), err)
		}
		return usagef("batch: %v", err)
	}
	for _, fl := range []string{"cocoonfs-strength", "cocoonfs-zero-free"} {
		if c.IsSet(fl) && !used["cocoonfs"] {
			return usagef("batch: --%s applies to CocoonFS images only, and no VM of this run is written in CocoonFS; drop the flag", fl)
		}
	}
	if opts.LUKS, err = luksBatchOptions(c); err != nil {
		return err
	}
	if err := needLUKSPolicy(vms, opts.LUKS); err != nil {
		return err
	}
	event, stopProgress := e.progress(c.Bool("json"), len(vms))
	opts.Event = event
	s, err := fleet.Run(ctx, vms, opts)
	stopProgress()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := e.printJSONLine(map[string]any{"summary": s}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "%d VMs in %s: %d made, %d already there and verified, %d failed, %d not started (%.1f s, %.1f vTPM/s)\n",
			s.Total, opts.Dir, s.Made, s.Verified, s.Failed, s.NotStarted, s.Seconds, float64(s.Made)/max(s.Seconds, 1e-9))
		for _, f := range s.Failures {
			fmt.Fprintf(e.stdout, "FAIL: %s\n", f)
		}
		if s.Interrupted {
			fmt.Fprintf(e.stdout, "interrupted: run the same command again to finish (finished VMs are kept)\n")
		}
	}
	if s.Failed > 0 || s.Interrupted {
		return cli.Exit("", 1)
	}
	return nil
}

// progress reports per-VM events: a progress bar on a terminal, a line
// every few seconds otherwise, or JSON lines.
func (e *cmdEnv) progress(asJSON bool, total int) (func(fleet.Event), func()) {
	if asJSON {
		return func(ev fleet.Event) { e.printJSONLine(ev) }, func() {}
	}
	if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar := progressbar.NewOptions(total, progressbar.OptionSetWriter(f), progressbar.OptionSetDescription("vTPMs"),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("vTPM"),
			progressbar.OptionSetPredictTime(true), progressbar.OptionFullWidth(), progressbar.OptionClearOnFinish())
		return func(ev fleet.Event) {
				if ev.Status == "failed" {
					bar.Clear()
					fmt.Fprintf(f, "FAIL %s: %s\n", ev.Name, ev.Error)
				}
				bar.Add(1)
			}, func() {
				bar.Finish()
			}
	}
	var mu sync.Mutex
	start, last := time.Now(), time.Now()
	return func(ev fleet.Event) {
		mu.Lock()
		defer mu.Unlock()
		if ev.Status == "failed" {
			fmt.Fprintf(e.stderr, "batch: FAIL %s: %s\n", ev.Name, ev.Error)
		}
		if time.Since(last) >= 2*time.Second || ev.Done == ev.Total {
			last = time.Now()
			el := time.Since(start).Seconds()
			rate := float64(ev.Done) / max(el, 1e-9)
			eta := time.Duration(float64(ev.Total-ev.Done)/max(rate, 1e-9)) * time.Second
			fmt.Fprintf(e.stderr, "batch: %d/%d done, %.1f vTPM/s, ETA %s\n", ev.Done, ev.Total, rate, eta.Round(time.Second))
		}
	}, func() {}
}

func (e *cmdEnv) batchVerifyCmd() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "re-verify every VM of a fleet directory",
		UsageText: "vtpm-mfg batch verify DIR --ca-cert C [--jobs N] [--json]",
		Description: `Checks, in parallel, that each VM's image opens with its key, is the
container its profile's SVSM reads, and holds EK certificates that are
compliant, chained to the CA and certify the EKs its TPM derives. Exits 1
if any VM fails, naming each.

Example:
  vtpm-mfg batch verify fleet --ca-cert ca.pem`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ca-cert", Usage: "CA certificate `FILE`(s) (PEM; the root last if several)"},
			&cli.IntFlag{Name: "jobs", Value: runtime.NumCPU(), Usage: "VMs checked in parallel"},
			jsonFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("batch verify: give the fleet DIR")
			}
			if err := need(c, "ca-cert"); err != nil {
				return err
			}
			certs, err := ekcert.ReadCertificates(c.String("ca-cert"))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := fleet.VerifyDir(ctx, c.Args().First(), certs[0], certs[1:], c.Int("jobs"))
			if err != nil && res == nil {
				return err
			}
			failed := 0
			for _, r := range res {
				if !r.OK {
					failed++
				}
			}
			if c.Bool("json") {
				if err := e.printJSON(map[string]any{"ok": failed == 0 && err == nil, "vms": res}); err != nil {
					return err
				}
			} else {
				for _, r := range res {
					if !r.OK {
						fmt.Fprintf(e.stdout, "FAIL: %s: %s\n", r.Name, r.Error)
					}
				}
				if failed == 0 && err == nil {
					fmt.Fprintf(e.stdout, "OK: all %d VMs verified\n", len(res))
				}
			}
			if failed > 0 || err != nil {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

func (e *cmdEnv) batchIndexCmd() *cli.Command {
	return &cli.Command{
		Name:      "index",
		Usage:     "rebuild fleet.jsonl and register/ from the VM directories (after merging shards)",
		UsageText: "vtpm-mfg batch index DIR --ca-cert C [--kbs-path TEMPLATE]",
		Description: `Example:
  cp -r shard-*/vm-* fleet/ && vtpm-mfg batch index fleet --ca-cert ca.pem`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ca-cert", Usage: "issuing CA certificate `FILE` (PEM; intermediates may follow)"},
			&cli.StringFlag{Name: "kbs-path", Value: fleet.DefaultKBSPath, Usage: "key broker resource path `TEMPLATE`"},
			kbsTokenFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("batch index: give the fleet DIR")
			}
			if err := need(c, "ca-cert"); err != nil {
				return err
			}
			certs, err := ekcert.ReadCertificates(c.String("ca-cert"))
			if err != nil {
				return err
			}
			return fleet.WriteIndex(c.Args().First(), certs[0], certs[1:], c.String("kbs-path"), c.String("kbs-admin-token"))
		},
	}
}
