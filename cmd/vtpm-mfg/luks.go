package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/urfave/cli/v2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/fleet"
	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
	"github.com/vtpm-mfg/vtpm-mfg/internal/keyfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/luks"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
)

const luksEnrollHelp = `Seals a fresh 32-byte secret from crypto/rand into the vTPM offline, as
systemd-cryptenroll --tpm2-device would inside the booted VM: the exact
object TPM2_Create returns under the parent the guest's systemd uses,
derived from the image's storage primary seed. With --disk, a new keyslot
whose passphrase is the secret's base64 (PBKDF2-SHA512, 1000 iterations, as
systemd's) and the systemd-tpm2 token are added through the cryptsetup
binary; the first boot then unlocks the disk by itself, inside the attested
VM. The secret never touches the disk and is never printed; --secret-out
FILE (mode 0600) is the one exception. --token-out FILE writes the token
JSON (without --disk: for image pipelines that run cryptsetup luksAddKey and
cryptsetup token import themselves; then give --keyslot and --secret-out).

The guest's systemd (--guest-systemd) decides the token format and parent:
  252  (Debian 12, RHEL 9) a transient ECC primary key of the owner
       hierarchy, attributes 0x00030072 (the SRK template without noDA)
  254  the storage root key at 0x81000001, recorded in tpm2_srk (default;
       every newer systemd reads it). The image gets the SRK (as
       manufacture --persist srk makes it) through a normal rewrite if it
       lacks it.
  257  254's format; the sealed object has noDA when there is no PIN
A 252 guest cannot use a 254-style token; a newer guest reads 252-style
tokens. Confirmed against systemd 252.39 (Debian 12): its sources, tokens
its systemd-cryptenroll made (luks check reads them) and its
systemd-cryptsetup (it unseals these tokens); and against the upstream
src/shared/tpm2-util.c and src/cryptenroll/cryptenroll-tpm2.c of the 255
and 257 lines (SRK parent, tpm2_srk, PIN salt, policy order, the signing
key's exponent). 257's noDA on objects without a PIN follows tokens
systemd 257 made.

Policy, one of:
  --tpm2-public-key PEM [--tpm2-public-key-pcrs 11]
       a signed PCR policy (PolicyAuthorize), the UKI way: the OS vendor
       signs the expected PCR 11 values (the UKI's .pcrsig); the default PCRs
       are 11
  --tpm2-pcrs 7:HEX[,11:HEX...]
       PolicyPCR over values you predict (a bank may be named: 7:sha256=HEX);
       may be combined with --tpm2-public-key
  --no-pcr-policy
       no PCR binding at all. Refused unless asked for: any operating system
       booted in this VM could then unseal the key.
--tpm2-pin FILE adds PolicyAuthValue with the PIN read from FILE ("-":
standard input), hashed (and, for 254 and later, salted) as that systemd
does; the guest then asks for the PIN at boot.

Examples:
  vtpm-mfg luks enroll --state state.img --key-file state.key --disk disk.img \
      --disk-key-file disk.key --tpm2-public-key vendor-pcr.pem
  vtpm-mfg luks enroll --state state.img --key-file state.key --disk disk.img \
      --disk-key-file disk.key --guest-systemd 252 --tpm2-pcrs 7:0000000000000000000000000000000000000000000000000000000000000000
  vtpm-mfg luks enroll --state state.img --key-file state.key --no-pcr-policy \
      --keyslot 3 --token-out token.json --secret-out secret.txt`

const luksCheckHelp = `Reads every systemd-tpm2 token of the disk and, offline (with this tool's
own derivation from the image's storage seed, not a TPM), unseals it under
the parent the token names, checks that the sealed object's policy digest
is that of the stated policy (signed policies and PIN always; literal PCR
values when given with --tpm2-pcrs), and tests the resulting passphrase
against the token's keyslot with cryptsetup open --test-passphrase (nothing
is activated). One line per token: "opens keyslot N on this vTPM", or why
not (another vTPM, another parent, a wrong policy). Exit 1 if any token
fails or there is none.

Examples:
  vtpm-mfg luks check --state state.img --key-file state.key --disk disk.img
  vtpm-mfg luks check --state state.img --key-file state.key --disk disk.img --json`

func luksSourceFlags() []cli.Flag { return append(sourceFlags(), profileFlag("")) }

func (e *cmdEnv) luksCmd() *cli.Command {
	return &cli.Command{
		Name:  "luks",
		Usage: "enroll LUKS2 disks into the vTPM offline (systemd-tpm2 tokens), check them",
		Description: `The guest's systemd unlocks the disk from the vTPM at first boot, with no
one at the console. See luks enroll --help and luks check --help.

Examples:
  vtpm-mfg luks enroll --state state.img --key-file state.key --disk disk.img \
      --disk-key-file disk.key --tpm2-public-key vendor-pcr.pem
  vtpm-mfg luks check --state state.img --key-file state.key --disk disk.img`,
		Subcommands: []*cli.Command{
			{
				Name:        "enroll",
				Usage:       "seal a new disk secret into the vTPM and add it to a LUKS2 disk as systemd's TPM2 token",
				UsageText:   "vtpm-mfg luks enroll (--state IMAGE (--key-file K | --key-env NAME) | --nvchip FILE) (--disk DISK --disk-key-file F | --token-out FILE) (--tpm2-public-key PEM | --tpm2-pcrs P:HEX,... | --no-pcr-policy) [--guest-systemd 252|254|257] [--tpm2-pin FILE] [--secret-out FILE] [--json]",
				Description: luksEnrollHelp,
				Flags: append(luksSourceFlags(),
					&cli.StringFlag{Name: "disk", Usage: "LUKS2 image file or block `DISK` to enroll"},
					&cli.StringFlag{Name: "disk-key-file", Usage: "`FILE` holding a key (passphrase) that unlocks the disk now"},
					&cli.StringFlag{Name: "guest-systemd", Value: "254", Usage: "systemd `VERSION` of the guest: 252, 254 or 257 (token format and sealing parent)"},
					&cli.StringFlag{Name: "tpm2-public-key", Usage: "`PEM` RSA public key that signs PCR policies (signed PCR policy)"},
					&cli.StringFlag{Name: "tpm2-public-key-pcrs", Usage: "`PCRS` the signed policy covers, e.g. 11 or 11+12 (default 11)"},
					&cli.StringFlag{Name: "tpm2-pcrs", Usage: "literal PCR policy: `PCR:HEX`[,PCR:HEX...] (PCR:sha256=HEX names the bank)"},
					&cli.BoolFlag{Name: "no-pcr-policy", Usage: "bind to no PCRs at all (any OS booted in this VM could unseal)"},
					&cli.StringFlag{Name: "tpm2-pin", Usage: "read a PIN from `FILE` (\"-\": standard input) and require it (PolicyAuthValue)"},
					&cli.IntFlag{Name: "keyslot", Value: 1, Usage: "keyslot `N` the token names when written without --disk"},
					&cli.StringFlag{Name: "token-out", Usage: "also write the token JSON to `FILE`"},
					&cli.StringFlag{Name: "secret-out", Usage: "also write the keyslot passphrase to `FILE` (mode 0600)"},
					forceFlag, jsonFlag),
				Action: e.luksEnroll,
			},
			{
				Name:        "check",
				Usage:       "unseal every systemd-tpm2 token of a LUKS2 disk offline and test it against its keyslot",
				UsageText:   "vtpm-mfg luks check (--state IMAGE (--key-file K | --key-env NAME) | --nvchip FILE) --disk DISK [--tpm2-pcrs P:HEX,...] [--tpm2-pin FILE] [--json]",
				Description: luksCheckHelp,
				Flags: append(luksSourceFlags(),
					&cli.StringFlag{Name: "disk", Usage: "LUKS2 image file or block `DISK`"},
					&cli.StringFlag{Name: "tpm2-pcrs", Usage: "expected PCR values `PCR:HEX`[,...] to check literal PCR policies with"},
					&cli.StringFlag{Name: "tpm2-pin", Usage: "check PIN tokens against the PIN in `FILE`"},
					jsonFlag),
				Action: e.luksCheck,
			},
		},
	}
}

// parsePCRValues parses 7:HEX,11:sha256=HEX (also '+' between entries).
func parsePCRValues(s string) (tpm2.TPMIAlgHash, map[int][]byte, error) {
	vals := map[int][]byte{}
	var bank tpm2.TPMIAlgHash
	for _, item := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '+' }) {
		idx, v, ok := strings.Cut(item, ":")
		if !ok {
			return 0, nil, fmt.Errorf("%q: give PCR:HEX (the value the PCR will have; this tool cannot read it from the VM)", item)
		}
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 || i > 23 {
			return 0, nil, fmt.Errorf("%q: PCR index must be 0-23", item)
		}
		var b tpm2.TPMIAlgHash
		if name, hv, named := strings.Cut(v, "="); named {
			if b, err = luks.BankByName(strings.ToLower(name)); err != nil {
				return 0, nil, fmt.Errorf("%q: %v", item, err)
			}
			v = hv
		}
		raw, err := hex.DecodeString(v)
		if err != nil {
			return 0, nil, fmt.Errorf("%q: the value is not hex", item)
		}
		if b == 0 {
			switch len(raw) {
			case 20:
				b = tpm2.TPMAlgSHA1
			case 32:
				b = tpm2.TPMAlgSHA256
			case 48:
				b = tpm2.TPMAlgSHA384
			default:
				return 0, nil, fmt.Errorf("%q: a value of %d bytes is no PCR digest (SHA-1 20, SHA-256 32, SHA-384 48)", item, len(raw))
			}
		}
		if h, _ := b.Hash(); h.Size() != len(raw) {
			return 0, nil, fmt.Errorf("%q: %d bytes, the bank's digests have %d", item, len(raw), h.Size())
		}
		if bank != 0 && b != bank {
			return 0, nil, fmt.Errorf("%q: all PCRs must be of one bank (systemd refuses several)", item)
		}
		if _, dup := vals[i]; dup {
			return 0, nil, fmt.Errorf("PCR %d given twice", i)
		}
		bank, vals[i] = b, raw
	}
	if len(vals) == 0 {
		return 0, nil, fmt.Errorf("no PCR given")
	}
	return bank, vals, nil
}

func parsePCRList(s string) ([]int, error) {
	var l []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '+' }) {
		i, err := strconv.Atoi(f)
		if err != nil || i < 0 || i > 23 {
			return nil, fmt.Errorf("%q is not a PCR index 0-23", f)
		}
		if !contains(l, i) {
			l = append(l, i)
		}
	}
	if len(l) == 0 {
		return nil, fmt.Errorf("no PCR given")
	}
	sort.Ints(l)
	return l, nil
}

func contains(l []int, v int) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

// readPIN reads a PIN from a file or standard input; a final newline is
// dropped. The argument is never echoed (it may be a PIN typed in place of
// a file name).
func (e *cmdEnv) readPIN(c *cli.Context) ([]byte, error) {
	f := c.String("tpm2-pin")
	if f == "" {
		return nil, nil
	}
	var b []byte
	var err error
	if f == "-" && c.String("key-file") == "-" {
		return nil, usagef("%s: --tpm2-pin - and --key-file - both want standard input; give one of them as a file", c.Command.FullName())
	}
	if f == "-" {
		b, err = io.ReadAll(io.LimitReader(e.stdin, 4096))
	} else {
		st, serr := os.Stat(f)
		if serr != nil || !st.Mode().IsRegular() {
			return nil, usagef("%s: --tpm2-pin takes a regular file holding the PIN; the argument is not one (it is not shown, in case it is the PIN itself)", c.Command.FullName())
		}
		b, err = input.ReadFile(f, "PIN file", 4096)
	}
	if err != nil {
		return nil, fmt.Errorf("--tpm2-pin: %v", err)
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) == 0 || bytes.IndexByte(b, 0) >= 0 {
		clear(b)
		return nil, fmt.Errorf("--tpm2-pin %s: the PIN is empty or contains a NUL byte; write the PIN (one line) into the file", f)
	}
	return b, nil
}

func (e *cmdEnv) luksEnroll(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	name := c.Command.FullName()
	g, err := luks.ParseGeneration(c.String("guest-systemd"))
	if err != nil {
		return usagef("%s: --guest-systemd: %v", name, err)
	}
	disk, tokenOut, secretOut := c.String("disk"), c.String("token-out"), c.String("secret-out")
	for _, f := range []string{"token-out", "secret-out"} {
		if c.String(f) == "-" {
			return usagef("%s: --%s -: give a file name", name, f)
		}
	}
	switch {
	case disk == "" && tokenOut == "":
		return usagef("%s: give --disk DISK (with --disk-key-file) to enroll a disk, or --token-out FILE to write the token only", name)
	case disk != "" && c.String("disk-key-file") == "":
		return usagef("%s: --disk-key-file is required with --disk: a key that unlocks the disk now, to add the new keyslot with", name)
	case disk == "" && secretOut == "":
		return usagef("%s: without --disk, --secret-out FILE is needed too: the keyslot passphrase must reach whoever adds keyslot %d", name, c.Int("keyslot"))
	case disk != "" && c.IsSet("keyslot"):
		return usagef("%s: --keyslot is for tokens written without --disk; with --disk the first free keyslot is used", name)
	case c.Int("keyslot") < 0 || c.Int("keyslot") > 31:
		return usagef("%s: --keyslot %d: LUKS2 keyslots are 0-31", name, c.Int("keyslot"))
	}
	if kf := c.String("disk-key-file"); kf != "" {
		if st, err := os.Stat(kf); err != nil || !st.Mode().IsRegular() {
			return usagef("%s: --disk-key-file %s: not a regular file", name, kf)
		}
	}
	p, err := policyFlags(c, true)
	if err != nil {
		return err
	}
	pin, err := e.readPIN(c)
	if err != nil {
		return err
	}
	defer clear(pin)
	p.PIN = pin != nil
	j := &pipeline.LUKSEnrollJob{State: c.String("state"), NVChip: c.String("nvchip"), Profile: c.String("profile"),
		Disk: disk, DiskKeyFile: c.String("disk-key-file"), Gen: g, Policy: p, PIN: pin, Keyslot: c.Int("keyslot"),
		TokenOut: tokenOut, SecretOut: secretOut, Force: c.Bool("force")}
	switch {
	case j.State != "" && j.NVChip != "":
		return usagef("%s: give --nvchip or --state, not both", name)
	case j.State != "":
		if j.Key, err = e.loadKey(c, ""); err != nil {
			return err
		}
		defer keyfile.Wipe(j.Key)
	case j.NVChip == "":
		return usagef("%s: give --state IMAGE (with its key) or --nvchip FILE", name)
	}
	res, err := j.Run()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return e.printJSON(res)
	}
	if res.SRKAdded {
		src := j.State
		if src == "" {
			src = j.NVChip
		}
		fmt.Fprintf(e.stderr, "added the storage root key at 0x%08x to %s (systemd %d seals under it)\n", pipeline.SRKHandle, src, g)
	}
	if disk != "" {
		fmt.Fprintf(e.stdout, "%s: keyslot %d and systemd-tpm2 token %d added (systemd %d format, sealed under %s; policy %s)\n", disk, res.Keyslot, res.Token, g, res.Parent, res.PolicyHash)
	}
	if tokenOut != "" {
		fmt.Fprintf(e.stdout, "wrote the token for keyslot %d to %s\n", res.Keyslot, tokenOut)
	}
	if secretOut != "" {
		fmt.Fprintf(e.stderr, "wrote the keyslot passphrase to %s (mode 0600): keep it secret, delete it once used\n", secretOut)
	}
	return nil
}

func (e *cmdEnv) luksCheck(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if err := need(c, "disk"); err != nil {
		return err
	}
	var o pipeline.CheckOptions
	var err error
	if s := c.String("tpm2-pcrs"); s != "" {
		if _, o.PCRs, err = parsePCRValues(s); err != nil {
			return usagef("%s: --tpm2-pcrs: %v", c.Command.FullName(), err)
		}
	}
	if o.PIN, err = e.readPIN(c); err != nil {
		return err
	}
	defer clear(o.PIN)
	im, _, err := e.loadImage(c)
	if err != nil {
		return err
	}
	disk, err := luks.OpenDisk(c.String("disk"))
	if err != nil {
		return err
	}
	res, err := pipeline.LUKSCheck(im, disk, o)
	if err != nil {
		return err
	}
	failed := len(res) == 0
	for _, r := range res {
		failed = failed || !r.OK
	}
	if c.Bool("json") {
		if res == nil {
			res = []pipeline.TokenCheck{}
		}
		if err := e.printJSON(map[string]any{"disk": disk.Path, "tokens": res}); err != nil {
			return err
		}
	} else {
		if len(res) == 0 {
			fmt.Fprintf(e.stdout, "%s: no systemd-tpm2 token\n", disk.Path)
		}
		for _, r := range res {
			fmt.Fprintf(e.stdout, "%s: %s\n", disk.Path, r.Line())
		}
	}
	if failed {
		return cli.Exit("", 1)
	}
	return nil
}

// policyFlags reads the PCR policy flags (luks enroll, batch). With
// required, no policy at all needs --no-pcr-policy; otherwise it returns
// nil when no flag is given.
func policyFlags(c *cli.Context, required bool) (*luks.Policy, error) {
	name := c.Command.FullName()
	var err error
	p := &luks.Policy{}
	if pk := c.String("tpm2-public-key"); pk != "" {
		if p.PubKeyPEM, err = input.ReadFile(pk, "PCR policy public key", 1<<20); err != nil {
			return nil, err
		}
		if _, err := p.PublicKey(); err != nil {
			return nil, fmt.Errorf("%s: %v; give the PEM public key that signs the PCR policy (systemd-measure sign --public-key, ukify --pcr-public-key)", pk, err)
		}
		p.PubKeyPCRs = []int{11}
		if s := c.String("tpm2-public-key-pcrs"); s != "" {
			if p.PubKeyPCRs, err = parsePCRList(s); err != nil {
				return nil, usagef("%s: --tpm2-public-key-pcrs: %v", name, err)
			}
		}
	} else if c.IsSet("tpm2-public-key-pcrs") {
		return nil, usagef("%s: --tpm2-public-key-pcrs needs --tpm2-public-key", name)
	}
	if s := c.String("tpm2-pcrs"); s != "" {
		if p.Bank, p.PCRs, err = parsePCRValues(s); err != nil {
			return nil, usagef("%s: --tpm2-pcrs: %v", name, err)
		}
	}
	hasPolicy := p.PubKeyPEM != nil || p.PCRs != nil
	switch {
	case !hasPolicy && !c.Bool("no-pcr-policy") && !required:
		return nil, nil
	case !hasPolicy && !c.Bool("no-pcr-policy"):
		return nil, usagef("%s: no PCR policy given: give --tpm2-public-key PEM (signed PCR 11 policy) or --tpm2-pcrs, or --no-pcr-policy to bind the secret to this vTPM only (any OS booted in this VM could then unseal it)", name)
	case hasPolicy && c.Bool("no-pcr-policy"):
		return nil, usagef("%s: --no-pcr-policy contradicts --tpm2-public-key/--tpm2-pcrs", name)
	}
	return p, nil
}

// luksBatchFlags are batch's flags for the disk and disk_key_file columns.
func luksBatchFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "guest-systemd", Value: "254", Usage: "for VMs with a disk: the guest's systemd `VERSION` (252, 254, 257; see luks enroll --help)"},
		&cli.StringFlag{Name: "tpm2-public-key", Usage: "for VMs with a disk: `PEM` key of a signed PCR policy"},
		&cli.StringFlag{Name: "tpm2-public-key-pcrs", Usage: "`PCRS` of the signed policy (default 11)"},
		&cli.StringFlag{Name: "tpm2-pcrs", Usage: "for VMs with a disk: literal PCR policy `PCR:HEX`[,...]"},
		&cli.BoolFlag{Name: "no-pcr-policy", Usage: "for VMs with a disk: bind to the vTPM only, no PCRs"},
	}
}

// luksBatchOptions reads luksBatchFlags; nil if no policy was given.
func luksBatchOptions(c *cli.Context) (*fleet.LUKS, error) {
	g, err := luks.ParseGeneration(c.String("guest-systemd"))
	if err != nil {
		return nil, usagef("%s: --guest-systemd: %v", c.Command.FullName(), err)
	}
	p, err := policyFlags(c, false)
	if err != nil || p == nil {
		return nil, err
	}
	return &fleet.LUKS{Gen: g, Policy: p}, nil
}

// needLUKSPolicy refuses a manifest with disks but no PCR policy flag
// before anything is made.
func needLUKSPolicy(vms []fleet.VM, l *fleet.LUKS) error {
	for _, vm := range vms {
		if vm.Disk != "" && l == nil {
			return usagef("batch: VM %s has a disk to enroll: give the PCR policy for the disks (--tpm2-public-key PEM, --tpm2-pcrs, or --no-pcr-policy; see luks enroll --help)", vm.Name)
		}
	}
	return nil
}
