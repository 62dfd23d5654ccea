package pipeline

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/container"
	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/luks"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
	"github.com/vtpm-mfg/vtpm-mfg/internal/seal"
)

// LegacyPrimaryTemplate is the transient owner-hierarchy primary key
// systemd 252 (and earlier) seals disk secrets under: the SRK template
// without noDA (objectAttributes 0x00030072). It is a different key from the
// SRK: an object sealed under one does not load under the other.
func LegacyPrimaryTemplate() tpm2.TPMTPublic {
	t := SRKTemplate()
	t.ObjectAttributes.NoDA = false
	return t
}

// SealParent is a storage parent of the image's TPM, derived offline.
type SealParent struct {
	seal.Parent
	Key    *ek.Key
	Handle uint32 // SRKHandle, or 0 for the transient legacy primary
	What   string
}

// DeriveSealParent derives the key systemd of generation g seals under:
// the SRK (254 and later) or the legacy primary (252), with the seedValue
// TPM2_CreatePrimary gives it.
func DeriveSealParent(im *nv.Image, srk bool) (*SealParent, error) {
	return fromSeed(im, "SPSeed", func(sps []byte, mode ek.CandidateMode) (*SealParent, error) {
		return SealParentFromSeed(sps, mode, srk)
	})
}

// SealParentFromSeed derives the sealing parent from a storage primary seed
// (SPSeed.buffer[0:size]).
func SealParentFromSeed(sps []byte, mode ek.CandidateMode, srk bool) (*SealParent, error) {
	tmpl, what, handle := LegacyPrimaryTemplate(), "the transient ECC primary key of systemd 252 (attributes 0x00030072)", uint32(0)
	if srk {
		tmpl, what, handle = SRKTemplate(), "the storage root key at 0x81000001 (systemd 254 and later)", uint32(SRKHandle)
	}
	k, err := ek.DeriveTemplate(sps, tmpl, mode, nil)
	if err != nil {
		return nil, err
	}
	return &SealParent{Parent: seal.Parent{Public: k.Public, SeedValue: k.SeedValue(nil, nil)}, Key: k, Handle: handle, What: what}, nil
}

// SRKState tells whether the image holds this TPM's SRK at 0x81000001:
// present (true, nil), absent (false, nil) or another key there (error).
func SRKState(im *nv.Image, srk *SealParent) (bool, error) {
	i := im.Find(SRKHandle)
	if i < 0 {
		return false, nil
	}
	e := im.Entries[i]
	if e.Index != nil {
		return false, fmt.Errorf("0x%08x is an NV index, not a key", SRKHandle)
	}
	pub, _, err := nv.ObjectPublic(e)
	if err != nil {
		return false, fmt.Errorf("persistent object 0x%08x: %w", SRKHandle, err)
	}
	if !bytes.Equal(tpm2.Marshal(pub), tpm2.Marshal(srk.Public)) {
		return false, fmt.Errorf("persistent object 0x%08x is not the storage root key systemd expects (SRK template, attributes 0x00030472): systemd would seal under that other key; remove it or use --guest-systemd 252", SRKHandle)
	}
	return true, nil
}

// Enrollment is what LUKSSeal makes: the token, its secret and the
// keyslot passphrase.
type Enrollment struct {
	Token      *luks.Token
	Secret     []byte
	Passphrase []byte
	Parent     *SealParent
	NeedSRK    bool // the image lacks the SRK and must get it
}

// Wipe clears the secret material.
func (e *Enrollment) Wipe() {
	clear(e.Secret)
	clear(e.Passphrase)
}

// LUKSSeal seals a fresh 32-byte secret offline for the image's TPM as
// systemd g would (keyslot is recorded in the token), bound to policy p,
// with pin (nil for none).
func LUKSSeal(im *nv.Image, g luks.Generation, p *luks.Policy, pin []byte, keyslot int) (*Enrollment, error) {
	parent, err := DeriveSealParent(im, g.UsesSRK())
	if err != nil {
		return nil, err
	}
	needSRK := false
	if g.UsesSRK() {
		have, err := SRKState(im, parent)
		if err != nil {
			return nil, err
		}
		needSRK = !have
	}
	en, err := SealSecret(parent, g, p, pin, keyslot)
	if err != nil {
		return nil, err
	}
	en.NeedSRK = needSRK
	return en, nil
}

// SealSecret seals a fresh secret under parent as systemd g would.
func SealSecret(parent *SealParent, g luks.Generation, p *luks.Policy, pin []byte, keyslot int) (*Enrollment, error) {
	if (pin != nil) != p.PIN {
		return nil, fmt.Errorf("PIN flag and PIN disagree")
	}
	if g.UsesSRK() != (parent.Handle == SRKHandle) {
		return nil, fmt.Errorf("systemd %d does not seal under %s", g, parent.What)
	}
	en := &Enrollment{Parent: parent}
	digest, err := p.Digest()
	if err != nil {
		return nil, err
	}
	var salt, auth []byte
	if pin != nil {
		if g >= luks.Systemd254 {
			salt = make([]byte, luks.SaltSize)
			if _, err := rand.Read(salt); err != nil {
				return nil, err
			}
		}
		if auth, err = luks.PINAuth(pin, salt); err != nil {
			return nil, err
		}
		defer clear(auth)
	}
	en.Secret = make([]byte, luks.SecretSize)
	if _, err := rand.Read(en.Secret); err != nil {
		return nil, err
	}
	obj, err := seal.Create(rand.Reader, &parent.Parent, seal.Options{Data: en.Secret, AuthValue: auth, Policy: digest, Attributes: g.Attributes(pin != nil)})
	if err != nil {
		en.Wipe()
		return nil, err
	}
	var srk []byte
	if g.UsesSRK() {
		srk = luks.SerializeHandle(SRKHandle, parent.Key.Name, parent.Public)
	}
	en.Token = luks.NewToken(g, keyslot, obj, p, digest, salt, srk)
	en.Passphrase = luks.Passphrase(en.Secret)
	return en, nil
}

// TokenCheck is the outcome of checking one systemd-tpm2 token.
type TokenCheck struct {
	Token   int    `json:"token"`
	Keyslot int    `json:"keyslot"`
	Format  string `json:"format,omitempty"` // which systemd wrote it
	Parent  string `json:"parent,omitempty"`
	Policy  string `json:"policy,omitempty"`
	OK      bool   `json:"ok"`
	Problem string `json:"problem,omitempty"`
}

// Line is the one-line report of a token.
func (c *TokenCheck) Line() string {
	s := fmt.Sprintf("token %d", c.Token)
	if c.OK {
		return fmt.Sprintf("%s: opens keyslot %d on this vTPM (%s; %s)", s, c.Keyslot, c.Format, c.Policy)
	}
	return s + ": " + c.Problem
}

// CheckOptions tell LUKSCheck what the policy should be, when known.
type CheckOptions struct {
	// PCRs are the literal PCR values the caller expects (to check the
	// policy digest of tokens with literal PCR policies).
	PCRs map[int][]byte
	// PIN unlocks tokens with a PIN policy (never needed to unseal
	// offline, but checked against the object's authValue when given).
	PIN []byte
}

// LUKSCheck unseals every systemd-tpm2 token of disk offline with the
// image's storage seed, checks its policy digest against the stated policy
// and tests the passphrase against the token's keyslot.
func LUKSCheck(im *nv.Image, disk *luks.Disk, o CheckOptions) ([]TokenCheck, error) {
	md, err := disk.Metadata()
	if err != nil {
		return nil, err
	}
	var parents [2]*SealParent // legacy, SRK
	for i := range parents {
		if parents[i], err = DeriveSealParent(im, i == 1); err != nil {
			return nil, err
		}
	}
	var out []TokenCheck
	for _, id := range md.TokenIDs() {
		raw := md.Tokens[strconv.Itoa(id)]
		var head struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &head) != nil || head.Type != luks.TokenType {
			continue
		}
		c := TokenCheck{Token: id, Keyslot: -1}
		t, err := luks.ParseToken(raw)
		if err != nil {
			c.Problem = "unreadable systemd-tpm2 token: " + err.Error()
			out = append(out, c)
			continue
		}
		c.Keyslot = t.Keyslot()
		if c.Keyslot < 0 {
			c.Problem = fmt.Sprintf("keyslots %q: systemd needs exactly one keyslot", t.Keyslots)
			out = append(out, c)
			continue
		}
		checkToken(&c, t, parents, disk, o)
		out = append(out, c)
	}
	return out, nil
}

func checkToken(c *TokenCheck, t *luks.Token, parents [2]*SealParent, disk *luks.Disk, o CheckOptions) {
	fail := func(format string, a ...any) { c.Problem = fmt.Sprintf(format, a...) }
	blob, err := base64.StdEncoding.DecodeString(t.Blob)
	if err != nil {
		fail("tpm2-blob is not base64: %v", err)
		return
	}
	obj, rest, err := seal.ParseBlob(blob)
	if err != nil {
		fail("tpm2-blob: %v", err)
		return
	}
	if len(rest) > 0 {
		fail("tpm2-blob carries an encrypted seed (%d bytes): an object to import (systemd-cryptenroll --tpm2-device-key), which this check does not open", len(rest))
		return
	}
	if t.PrimaryAlg != "" && t.PrimaryAlg != "ecc" && t.SRK == "" {
		fail("tpm2-primary-alg %q: only the ECC primary key is derived here", t.PrimaryAlg)
		return
	}
	stated, other := parents[0], parents[1]
	c.Format = "systemd 252 format, legacy primary key"
	if t.SRK != "" {
		stated, other = parents[1], parents[0]
		c.Format = "systemd 254+ format, SRK 0x81000001"
		srk, err := base64.StdEncoding.DecodeString(t.SRK)
		if err != nil {
			fail("tpm2_srk is not base64: %v", err)
			return
		}
		h, name, pub, err := luks.ParseHandle(srk)
		if err != nil {
			fail("tpm2_srk: %v", err)
			return
		}
		if h != SRKHandle {
			fail("tpm2_srk names handle 0x%08x, not the SRK at 0x%08x: sealed under another key", h, SRKHandle)
			return
		}
		if !bytes.Equal(name, stated.Key.Name) || !bytes.Equal(tpm2.Marshal(*pub), tpm2.Marshal(stated.Public)) {
			fail("tpm2_srk is another vTPM's storage root key (Name %x, this vTPM's is %x): the token was sealed for another vTPM", name, stated.Key.Name)
			return
		}
	}
	c.Parent = stated.What
	contents, err := seal.Open(&stated.Parent, obj)
	if errors.Is(err, seal.ErrIntegrity) {
		if _, err2 := seal.Open(&other.Parent, obj); err2 == nil {
			fail("sealed under %s of this vTPM, but the token says %s: that systemd would not load it (TPM_RC_INTEGRITY)", other.What, stated.What)
		} else {
			fail("does not unseal on this vTPM: sealed for another vTPM (or changed); the integrity check under %s fails", stated.What)
		}
		return
	}
	if err != nil {
		fail("%v", err)
		return
	}
	defer clear(contents.Data)
	if t.PolicyHash != hex.EncodeToString(obj.Public.AuthPolicy.Buffer) {
		fail("tpm2-policy-hash %s differs from the sealed object's authPolicy %x: systemd would refuse to unseal", t.PolicyHash, obj.Public.AuthPolicy.Buffer)
		return
	}
	desc, err := checkPolicy(t, obj.Public.AuthPolicy.Buffer, o)
	if err != nil {
		fail("%v", err)
		return
	}
	c.Policy = desc
	if t.PIN {
		if len(contents.AuthValue) == 0 {
			fail("tpm2-pin is set but the sealed object has no authValue")
			return
		}
		if o.PIN != nil {
			var salt []byte
			if t.Salt != "" {
				if salt, err = base64.StdEncoding.DecodeString(t.Salt); err != nil {
					fail("tpm2_salt is not base64: %v", err)
					return
				}
			}
			want, err := luks.PINAuth(o.PIN, salt)
			if err != nil {
				fail("%v", err)
				return
			}
			if !bytes.Equal(want, contents.AuthValue) {
				fail("the PIN given does not match the token's PIN")
				return
			}
			c.Policy += ", PIN checked"
		}
	} else if len(contents.AuthValue) != 0 {
		fail("the sealed object has an authValue but tpm2-pin is not set: systemd would not send it")
		return
	}
	pass := luks.Passphrase(contents.Data)
	defer clear(pass)
	ok, err := disk.TestPassphrase(c.Keyslot, pass)
	if err != nil {
		fail("unseals, but testing keyslot %d failed: %v", c.Keyslot, err)
		return
	}
	if !ok {
		fail("unseals on this vTPM, but the secret does not open keyslot %d", c.Keyslot)
		return
	}
	c.OK = true
}

// checkPolicy recomputes the policy digest from what the token states and
// returns a description of the policy.
func checkPolicy(t *luks.Token, digest []byte, o CheckOptions) (string, error) {
	p := &luks.Policy{PIN: t.PIN}
	if t.PCRBank != "" {
		b, err := luks.BankByName(t.PCRBank)
		if err != nil {
			return "", fmt.Errorf("tpm2-pcr-bank: %v", err)
		}
		p.Bank = b
	}
	desc := "no PCR policy"
	if t.PubKey != "" {
		pemb, err := base64.StdEncoding.DecodeString(t.PubKey)
		if err != nil {
			return "", fmt.Errorf("tpm2_pubkey is not base64: %v", err)
		}
		p.PubKeyPEM, p.PubKeyPCRs = pemb, t.PubKeyPCRs
		if _, err := p.PublicKey(); err != nil {
			return "", fmt.Errorf("tpm2_pubkey: %v", err)
		}
		desc = fmt.Sprintf("signed PCR policy over PCRs %v", t.PubKeyPCRs)
	}
	if len(t.PCRs) > 0 {
		if t.PubKey == "" {
			desc = fmt.Sprintf("PCRs %v (%s)", t.PCRs, t.PCRBank)
		} else {
			desc = fmt.Sprintf("%s, PCRs %v (%s)", desc, t.PCRs, t.PCRBank)
		}
		if o.PCRs == nil {
			return desc + ", PCR values not in the token, digest not recomputed", nil
		}
		p.PCRs = map[int][]byte{}
		for _, i := range t.PCRs {
			v, ok := o.PCRs[i]
			if !ok {
				return "", fmt.Errorf("the token's policy covers PCR %d, for which no value was given", i)
			}
			p.PCRs[i] = v
		}
	}
	if t.PIN {
		desc += ", PIN"
	}
	want, err := p.Digest()
	if err != nil {
		return "", err
	}
	if bytes.Equal(want, digest) {
		return desc, nil
	}
	if p.PubKeyPEM != nil {
		// systemd 255.0-255.2 computed the signing key's Name with the
		// exponent 0; later versions still unseal such tokens.
		p.ZeroExponent = true
		if alt, err := p.Digest(); err == nil && bytes.Equal(alt, digest) {
			return desc + " (signing key Name with exponent 0, as systemd 255.0-255.2 wrote)", nil
		}
	}
	return "", fmt.Errorf("the policy digest %x is not that of the stated policy (%s; expected %x): the token states another policy than the sealed object has, or other PCR values", digest, desc, want)
}

// LUKSEnrollJob enrolls a disk (or writes a token file) for a vTPM.
type LUKSEnrollJob struct {
	// The vTPM: a state image with its key, or a raw NVChip.
	State, NVChip, Profile string
	Key                    []byte
	// Disk is a LUKS2 image or block device; DiskKeyFile unlocks it.
	Disk, DiskKeyFile string
	Gen               luks.Generation
	Policy            *luks.Policy
	PIN               []byte
	// Keyslot is the keyslot a token written without a disk names.
	Keyslot             int
	TokenOut, SecretOut string
	Force               bool
	// BeforeDiskChange, if set, is told the keyslot and token the disk
	// will get, before it is changed (a journal for resuming after a crash).
	BeforeDiskChange func(keyslot, token int) error
}

// LUKSEnrollResult says what was done.
type LUKSEnrollResult struct {
	Disk       string `json:"disk,omitempty"`
	Keyslot    int    `json:"keyslot"`
	Token      int    `json:"token"` // -1 without a disk
	Format     int    `json:"guest_systemd"`
	Parent     string `json:"parent"`
	PolicyHash string `json:"policy_hash"`
	SRKAdded   bool   `json:"srk_added,omitempty"`
	TokenOut   string `json:"token_file,omitempty"`
	SecretOut  string `json:"secret_file,omitempty"`
}

func (j *LUKSEnrollJob) source() string {
	if j.State != "" {
		return j.State
	}
	return j.NVChip
}

func (j *LUKSEnrollJob) readImage() (*nv.Image, error) {
	if j.State != "" {
		im, _, err := ReadState(j.State, j.Key, j.Profile)
		return im, err
	}
	return ReadNVChip(j.NVChip, j.Profile)
}

// Run seals a fresh secret for the vTPM and, with a disk, adds a keyslot
// with its passphrase and imports the token, through cryptsetup; the
// optional token and secret files are written all together with the disk
// change, or not at all. For systemd 254 and later an image without the SRK
// at 0x81000001 gets it (a normal rewrite of the image).
func (j *LUKSEnrollJob) Run() (*LUKSEnrollResult, error) {
	for _, f := range []string{j.TokenOut, j.SecretOut} {
		if f != "" {
			if err := atomicfile.Check(f, j.Force); err != nil {
				return nil, err
			}
		}
	}
	im, err := j.readImage()
	if err != nil {
		return nil, err
	}
	var disk *luks.Disk
	tokenID, slot := -1, j.Keyslot
	if j.Disk != "" {
		if disk, err = luks.OpenDisk(j.Disk); err != nil {
			return nil, err
		}
		md, err := disk.Metadata()
		if err != nil {
			return nil, err
		}
		if slot, tokenID = md.FreeKeyslot(), md.FreeTokenID(); slot < 0 || tokenID < 0 {
			return nil, fmt.Errorf("%s: no free LUKS2 keyslot or token (32 each); remove one with cryptsetup luksKillSlot or token remove", j.Disk)
		}
	}
	en, err := LUKSSeal(im, j.Gen, j.Policy, j.PIN, slot)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", j.source(), err)
	}
	defer en.Wipe()
	res := &LUKSEnrollResult{Disk: j.Disk, Keyslot: slot, Token: tokenID, Format: int(j.Gen), Parent: en.Parent.What,
		PolicyHash: en.Token.PolicyHash, SRKAdded: en.NeedSRK, TokenOut: j.TokenOut, SecretOut: j.SecretOut}

	var b atomicfile.Batch
	defer b.Abort()
	if j.TokenOut != "" {
		tj := append(en.Token.JSON(), '\n')
		if err := b.Add(j.TokenOut, 0o644, j.Force, func(f *os.File) error { _, err := f.Write(tj); return err }); err != nil {
			return nil, err
		}
	}
	if j.SecretOut != "" {
		if err := b.Add(j.SecretOut, 0o600, j.Force, func(f *os.File) error { _, err := f.Write(en.Passphrase); return err }); err != nil {
			return nil, err
		}
	}
	undo := func() {}
	if disk != nil && j.BeforeDiskChange != nil {
		if err := j.BeforeDiskChange(slot, tokenID); err != nil {
			return nil, err
		}
	}
	if disk != nil {
		if err := disk.AddKeyslot(j.DiskKeyFile, slot, en.Passphrase); err != nil {
			return nil, err
		}
		if err := disk.ImportToken(tokenID, en.Token.JSON()); err != nil {
			if kerr := disk.KillKeyslot(j.DiskKeyFile, slot); kerr != nil {
				return nil, fmt.Errorf("%w; removing the new keyslot %d failed too (%v): remove it with cryptsetup luksKillSlot %s %d", err, slot, kerr, j.Disk, slot)
			}
			return nil, fmt.Errorf("%w (the new keyslot was removed again; the disk is unchanged)", err)
		}
		undo = func() {
			disk.RemoveToken(tokenID)
			disk.KillKeyslot(j.DiskKeyFile, slot)
		}
	}
	if en.NeedSRK {
		if err := j.persistSRK(en.Parent); err != nil {
			undo()
			return nil, err
		}
	}
	if err := b.Commit(); err != nil {
		undo()
		return nil, err
	}
	return res, nil
}

// persistSRK rewrites the image with the SRK at 0x81000001.
func (j *LUKSEnrollJob) persistSRK(srk *SealParent) error {
	add := func(nvb []byte) ([]byte, error) {
		im, err := ParseNV(j.source(), nvb, j.Profile)
		if err != nil {
			return nil, err
		}
		have, err := SRKState(im, srk)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", j.source(), err)
		}
		if !have {
			if _, err := PersistSRK(im); err != nil {
				return nil, fmt.Errorf("%s: adding the SRK at 0x%08x: %w", j.source(), SRKHandle, err)
			}
		}
		return im.Bytes(), nil
	}
	if j.State != "" {
		f, err := container.DetectFile(j.State)
		if err != nil {
			return err
		}
		// The image keeps its layout: its warnings are inspect's to report.
		_, err = f.Update(j.State, j.Key, nil, add)
		return err
	}
	rw, err := atomicfile.BeginRewrite(j.NVChip)
	if err != nil {
		return err
	}
	defer rw.Close()
	old, err := io.ReadAll(rw.File)
	if err != nil {
		return fmt.Errorf("%s: %s", j.NVChip, atomicfile.ErrText(err))
	}
	nvb, err := add(old)
	if err != nil {
		return err
	}
	return rw.Commit(func(f *os.File) error { _, err := f.Write(nvb); return err })
}

// LUKSUndo removes a keyslot and the token that names it from a disk (what
// an interrupted enrollment left), if they are still there and belong
// together.
func LUKSUndo(diskPath, diskKeyFile string, keyslot, token int) error {
	disk, err := luks.OpenDisk(diskPath)
	if err != nil {
		return err
	}
	md, err := disk.Metadata()
	if err != nil {
		return err
	}
	if raw, ok := md.Tokens[strconv.Itoa(token)]; ok {
		if t, err := luks.ParseToken(raw); err == nil && t.Keyslot() == keyslot {
			if err := disk.RemoveToken(token); err != nil {
				return fmt.Errorf("%s: removing token %d: %w", diskPath, token, err)
			}
		}
	}
	if _, ok := md.Keyslots[strconv.Itoa(keyslot)]; ok {
		if err := disk.KillKeyslot(diskKeyFile, keyslot); err != nil {
			return fmt.Errorf("%s: removing keyslot %d: %w", diskPath, keyslot, err)
		}
	}
	return nil
}
