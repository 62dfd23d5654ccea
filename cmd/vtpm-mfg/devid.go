package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ekcert"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
)

const devIDAlgList = "rsa2048 (SHA-256), rsa3072 (SHA-384), ecc-p256 (SHA-256) or ecc-p384 (SHA-384)"

// devIDFlags are the device identity flags of manufacture and batch.
func devIDFlags(serialUsage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "iak", Usage: "also create the IAK (TCG DevID initial attestation key, restricted signing) of type `ALG`, " + devIDAlgList + ", persistent at 0x81020001 with its certificate at NV 0x01C90100"},
		&cli.StringFlag{Name: "idevid", Usage: "also create the IDevID (IEEE 802.1AR device identity signing key) of type `ALG`, " + devIDAlgList + ", persistent at 0x81020000 with its certificate at NV 0x01C90200"},
		&cli.StringFlag{Name: "device-serial", Usage: serialUsage},
		&cli.BoolFlag{Name: "platform-cert", Usage: "also store a TCG platform certificate (RFC 5755 attribute certificate, Platform Certificate Profile 1.1) held by the RSA EK certificate at NV 0x01C08000, its platform serial the device serial"},
		&cli.StringFlag{Name: "platform-manufacturer", Usage: "platform manufacturer `NAME` in the platform certificate (default: the CA's organization, else its common name)"},
		&cli.StringFlag{Name: "platform-model", Usage: "platform model `NAME` in the platform certificate (default: \"COCONUT-SVSM confidential VM (AMD SEV-SNP) with vTPM\")"},
		&cli.StringFlag{Name: "platform-version", Usage: "platform version `V` in the platform certificate (default: the vTPM profile and TCG TPM commit)"},
	}
}

// devIDHelp is the help paragraph on device identity keys.
const devIDHelp = `Device identity keys (TCG "TPM 2.0 Keys for Device Identity and
Attestation"): --iak and --idevid create the IAK and the IDevID as the
TPM's TPM2_CreatePrimary does in the endorsement hierarchy from the
spec's templates (attributes 0x000500F2 / 0x000400F2, symmetric NULL,
IAK RSASSA-PSS or ECDSA, IDevID NULL (RSA) or ECDSA, the spec's
authPolicy digests, unique "IAK" / "IDEVID"; for ECC both x and y hold
the string, as rust-keylime regenerates them, where swtpm leaves y
empty), make them persistent at 0x81020001 (IAK) and 0x81020000 (IDevID)
and store certificates signed by the CA at NV 0x01C90100 (IAK) and
0x01C90200 (IDevID): subject serialNumber=<device serial>,
subjectAltName otherName HardwareModuleName (tcg-tpm 2.23.133.1.2, the
device serial), keyUsage digitalSignature, policies
tcg-cap-verifiedTPMResidency plus verifiedTPMRestricted (IAK) or
verifiedTPMFixed (IDevID), and for the IAK the extendedKeyUsage
tcg-kp-AIKCertificate. --platform-cert adds a TCG platform certificate
(an RFC 5755 attribute certificate, Platform Certificate Profile 1.1) at
NV 0x01C08000: its holder is the RSA EK certificate, it states the
platform's manufacturer, model, version (--platform-manufacturer,
--platform-model, --platform-version) and serial (the device serial), the
platform specification the TPM reports (none: class 0, version 0.0.0) and
the credential type tcg-kp-PlatformAttributeCertificate.`

// parseDevID reads --iak, --idevid and --device-serial; with template,
// --device-serial may hold {name} (batch).
func parseDevID(c *cli.Context, p *nv.Profile, template bool) (pipeline.DevIDSpec, error) {
	var d pipeline.DevIDSpec
	for _, f := range []struct {
		flag string
		kind ek.DevIDKind
		dst  *ek.Alg
	}{{"iak", ek.IAK, &d.IAK}, {"idevid", ek.IDevID, &d.IDevID}} {
		s := c.String(f.flag)
		if s == "" {
			continue
		}
		a, err := ek.ParseDevIDAlg(s)
		if err != nil {
			return d, usagef("--%s: %v", f.flag, err)
		}
		if p != nil {
			if err := pipeline.CheckDevID(p, f.kind, a); err != nil {
				return d, usagef("--%s: %v", f.flag, err)
			}
		}
		*f.dst = a
	}
	if c.Bool("platform-cert") {
		d.Platform = &pipeline.PlatformInfo{Manufacturer: c.String("platform-manufacturer"), Model: c.String("platform-model"), Version: c.String("platform-version")}
	} else {
		for _, f := range []string{"platform-manufacturer", "platform-model", "platform-version"} {
			if c.String(f) != "" {
				return d, usagef("--%s describes the platform certificate; give --platform-cert too", f)
			}
		}
	}
	d.DeviceSerial = c.String("device-serial")
	if d.DeviceSerial != "" {
		if !d.Any() {
			return d, usagef("--device-serial: names the device in IAK/IDevID (and platform) certificates; give --iak, --idevid or --platform-cert too")
		}
		probe := d.DeviceSerial
		if template {
			probe = strings.ReplaceAll(probe, "{name}", "vm")
		}
		if err := ekcert.CheckDeviceSerial(probe); err != nil {
			return d, usagef("--device-serial: %v", err)
		}
	}
	return d, nil
}

func printDevIDs(e *cmdEnv, ds []pipeline.ManifestDevID) {
	for _, d := range ds {
		fmt.Fprintf(e.stdout, "  %-9s %s %s at %s, certificate (serialNumber=%s) serial %s at NV index %s\n",
			d.Alg, pipeline.KindName(ek.DevIDKind(d.Kind)), d.KeySHA256, d.Handle, d.DeviceSerial, d.Serial, d.Index)
	}
}
