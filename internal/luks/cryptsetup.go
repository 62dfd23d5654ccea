package luks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
)

// ErrNoCryptsetup says that the cryptsetup binary is missing.
var ErrNoCryptsetup = errors.New("the cryptsetup binary is not installed (Debian/Ubuntu: apt-get install cryptsetup-bin; Fedora/RHEL: dnf install cryptsetup); LUKS2 headers are changed only through it")

// Cryptsetup finds the cryptsetup binary ($VTPM_MFG_CRYPTSETUP, then PATH,
// then /usr/sbin and /sbin, which are not on every user's PATH).
func Cryptsetup() (string, error) {
	if p := os.Getenv("VTPM_MFG_CRYPTSETUP"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("cryptsetup"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/cryptsetup", "/sbin/cryptsetup"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNoCryptsetup
}

// Disk is a LUKS2 device or image file driven through cryptsetup.
type Disk struct {
	Path string
	bin  string
}

// OpenDisk checks that path is a LUKS2 header cryptsetup reads.
func OpenDisk(path string) (*Disk, error) {
	bin, err := Cryptsetup()
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, errors.Unwrap(err))
	}
	if !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0 {
		return nil, fmt.Errorf("%s: not a LUKS2 image file or block device", path)
	}
	d := &Disk{Path: path, bin: bin}
	if _, err := d.run(nil, nil, "isLuks", "--type", "luks2"); err != nil {
		return nil, fmt.Errorf("%s: not a LUKS2 volume (cryptsetup isLuks --type luks2 says no); format it with cryptsetup luksFormat --type luks2 first", path)
	}
	return d, nil
}

// run runs cryptsetup with args (the disk as the last argument unless
// args hold it); stdin and the extra file (fd 3) carry secrets, never the
// command line.
func (d *Disk) run(stdin []byte, fd3 []byte, args ...string) ([]byte, error) {
	if !contains(args, d.Path) {
		args = append(args, d.Path)
	}
	args = append([]string{"--batch-mode"}, args...)
	cmd := exec.Command(d.bin, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if fd3 != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		cmd.ExtraFiles = []*os.File{r}
		go func() { w.Write(fd3); w.Close() }()
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		var ee *exec.ExitError
		code := -1
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return out.Bytes(), &CmdError{Args: args, Code: code, Msg: msg}
	}
	return out.Bytes(), nil
}

// CmdError is a failed cryptsetup run.
type CmdError struct {
	Args []string
	Code int
	Msg  string
}

func (e *CmdError) Error() string {
	return fmt.Sprintf("cryptsetup %s: %s (exit %d)", strings.Join(e.Args[1:], " "), e.Msg, e.Code)
}

// Metadata is the part of the LUKS2 JSON metadata used here.
type Metadata struct {
	Keyslots map[string]json.RawMessage `json:"keyslots"`
	Tokens   map[string]json.RawMessage `json:"tokens"`
}

// Metadata reads the LUKS2 JSON metadata (luksDump --dump-json-metadata).
func (d *Disk) Metadata() (*Metadata, error) {
	out, err := d.run(nil, nil, "luksDump", "--dump-json-metadata")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.Path, err)
	}
	var m Metadata
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("%s: LUKS2 metadata: %v", d.Path, err)
	}
	return &m, nil
}

// ids returns the sorted numeric keys of a metadata map.
func ids(m map[string]json.RawMessage) []int {
	var l []int
	for k := range m {
		if n, err := strconv.Atoi(k); err == nil {
			l = append(l, n)
		}
	}
	sort.Ints(l)
	return l
}

// KeyslotIDs are the used keyslots; TokenIDs the used token ids.
func (m *Metadata) KeyslotIDs() []int { return ids(m.Keyslots) }
func (m *Metadata) TokenIDs() []int   { return ids(m.Tokens) }

func firstFree(used []int, max int) int {
	for i := 0; i < max; i++ {
		if !contains(used, i) {
			return i
		}
	}
	return -1
}

func contains[T comparable](l []T, v T) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

// LUKS2 has 32 keyslots and 32 tokens.
const maxSlots = 32

// FreeKeyslot and FreeTokenID are the lowest unused ones, or -1.
func (m *Metadata) FreeKeyslot() int { return firstFree(m.KeyslotIDs(), maxSlots) }
func (m *Metadata) FreeTokenID() int { return firstFree(m.TokenIDs(), maxSlots) }

// AddKeyslot adds keyslot slot with passphrase pass, unlocking the volume
// with the key in keyFile (a file the user gave; cryptsetup reads it). The
// keyslot uses PBKDF2-SHA512 with 1000 iterations, as systemd-cryptenroll's
// keyslots for TPM-sealed secrets do.
func (d *Disk) AddKeyslot(keyFile string, slot int, pass []byte) error {
	_, err := d.run(nil, pass, "luksAddKey", "--key-file", keyFile, "--new-keyfile", "/dev/fd/3",
		"--new-key-slot", strconv.Itoa(slot), "--pbkdf", "pbkdf2", "--hash", "sha512", "--pbkdf-force-iterations", "1000")
	if err != nil {
		return fmt.Errorf("%s: adding keyslot %d: %w", d.Path, slot, err)
	}
	return nil
}

// KillKeyslot removes a keyslot (used to undo AddKeyslot).
func (d *Disk) KillKeyslot(keyFile string, slot int) error {
	_, err := d.run(nil, nil, "luksKillSlot", "--key-file", keyFile, d.Path, strconv.Itoa(slot))
	return err
}

// ImportToken imports a token JSON as token id.
func (d *Disk) ImportToken(id int, tokenJSON []byte) error {
	_, err := d.run(tokenJSON, nil, "token", "import", "--json-file", "-", "--token-id", strconv.Itoa(id))
	if err != nil {
		return fmt.Errorf("%s: importing token %d: %w; if the LUKS2 metadata area is full (cryptsetup --debug says \"JSON does not fit\"), remove unused tokens or keyslots, or make the disk with a larger cryptsetup luksFormat --luks2-metadata-size", d.Path, id, err)
	}
	return nil
}

// TestPassphrase checks pass against keyslot slot (cryptsetup open
// --test-passphrase; nothing is activated, no device-mapper needed). It
// returns false, nil when the passphrase is wrong.
func (d *Disk) TestPassphrase(slot int, pass []byte) (bool, error) {
	_, err := d.run(pass, nil, "open", "--test-passphrase", "--key-slot", strconv.Itoa(slot), "--key-file", "-")
	var ce *CmdError
	if errors.As(err, &ce) && ce.Code == 2 {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", d.Path, err)
	}
	return true, nil
}

// RemoveToken removes a token (used to undo ImportToken).
func (d *Disk) RemoveToken(id int) error {
	_, err := d.run(nil, nil, "token", "remove", "--token-id", strconv.Itoa(id))
	return err
}
