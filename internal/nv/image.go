package nv

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Handle types of entries in the dynamic area.
const (
	HTNVIndex    = 0x01
	HTPersistent = 0x81
)

// Image is a parsed NVChip.
type Image struct {
	Profile *Profile
	// Fixed holds the bytes of every fixed region, [0, DynamicStart).
	Fixed []byte
	// Entries is the dynamic list in NV order.
	Entries []Entry
	// MaxCounter is the u64 stored in the list terminator.
	MaxCounter uint64
	// Free is everything after the list terminator.
	Free []byte
}

// Entry is one element of the dynamic list: an NV index or a persistent
// object (kept opaque).
type Entry struct {
	Index  *Index
	Handle uint32
	// Object is, for a persistent object, the payload after the size field
	// (handle and OBJECT struct), preserved byte for byte.
	Object []byte
}

// Index is an NV index as the TPM stores it: NV_INDEX followed by its data.
type Index struct {
	Handle     uint32
	NameAlg    uint16
	Attributes uint32
	AuthPolicy []byte
	DataSize   uint16
	AuthValue  []byte
	// Data is the index content (nil for orderly indices, whose data lives
	// in RAM).
	Data []byte
	// raw is the NV_INDEX struct as found; padding and unused buffer tails
	// are carried over from it (zeros for new indices).
	raw []byte
}

// ParseError describes why an NVChip does not fit a profile.
type ParseError struct {
	Profile string
	Msg     string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("not a valid NVChip for profile %s: %s", e.Profile, e.Msg)
}

func (p *Profile) errf(format string, a ...any) error {
	return &ParseError{Profile: p.Name, Msg: fmt.Sprintf(format, a...)}
}

var le = binary.LittleEndian

// Parse decodes an NVChip for profile p, checking everything a TPM of that
// build relies on.
func Parse(p *Profile, data []byte) (*Image, error) {
	if len(data) != p.NVSize {
		return nil, p.errf("size is %d bytes, the TPM needs exactly %d (it re-manufactures otherwise)", len(data), p.NVSize)
	}
	im := &Image{Profile: p, Fixed: append([]byte(nil), data[:p.DynamicStart]...)}
	if err := im.checkFixed(); err != nil {
		return nil, err
	}
	off := p.DynamicStart
	for {
		if off+p.TerminatorSize > p.NVSize {
			return nil, p.errf("dynamic list runs off the end of NV at offset 0x%04x (no list terminator)", off)
		}
		size := int(le.Uint32(data[off:]))
		if size == 0 {
			im.MaxCounter = le.Uint64(data[off+4:])
			im.Free = append([]byte(nil), data[off+p.TerminatorSize:]...)
			return im, nil
		}
		if size < 8 || off+size+p.TerminatorSize > p.NVSize {
			return nil, p.errf("dynamic list entry at 0x%04x has size %d, which runs off the end of NV", off, size)
		}
		payload := data[off+4 : off+size]
		handle := le.Uint32(payload)
		switch handle >> 24 {
		case HTNVIndex:
			ix, err := p.parseIndex(payload, off)
			if err != nil {
				return nil, err
			}
			im.Entries = append(im.Entries, Entry{Index: ix, Handle: handle})
		case HTPersistent:
			if size != p.EvictObjectSize {
				return nil, p.errf("persistent object 0x%08x at 0x%04x has size %d, this build stores %d", handle, off, size, p.EvictObjectSize)
			}
			im.Entries = append(im.Entries, Entry{Handle: handle, Object: append([]byte(nil), payload...)})
		default:
			return nil, p.errf("dynamic list entry at 0x%04x has handle 0x%08x, neither an NV index nor a persistent object", off, handle)
		}
		off += size
	}
}

func (p *Profile) parseIndex(payload []byte, at int) (*Index, error) {
	L := p.Index
	if len(payload) < L.Size {
		return nil, p.errf("NV index entry at 0x%04x is %d bytes, shorter than NV_INDEX (%d)", at, len(payload), L.Size)
	}
	s := payload[:L.Size]
	ix := &Index{
		Handle:     le.Uint32(s),
		NameAlg:    le.Uint16(s[L.NameAlg:]),
		Attributes: le.Uint32(s[L.Attributes:]),
		DataSize:   le.Uint16(s[L.DataSize:]),
		raw:        append([]byte(nil), s...),
	}
	var err error
	if ix.AuthPolicy, err = p.tpm2b(s[L.AuthPolicy:], "authPolicy", ix.Handle); err != nil {
		return nil, err
	}
	if ix.AuthValue, err = p.tpm2b(s[L.AuthValue:], "authValue", ix.Handle); err != nil {
		return nil, err
	}
	data := payload[L.Size:]
	if ix.Attributes&AttrOrderly != 0 {
		if len(data) != 0 {
			return nil, p.errf("orderly NV index 0x%08x at 0x%04x has %d bytes of data in NV, expected none", ix.Handle, at, len(data))
		}
	} else {
		if len(data) != int(ix.DataSize) {
			return nil, p.errf("NV index 0x%08x at 0x%04x: entry holds %d data bytes but dataSize is %d", ix.Handle, at, len(data), ix.DataSize)
		}
		ix.Data = append([]byte(nil), data...)
	}
	if int(ix.DataSize) > p.MaxNVIndexSize {
		return nil, p.errf("NV index 0x%08x has dataSize %d, above MAX_NV_INDEX_SIZE %d", ix.Handle, ix.DataSize, p.MaxNVIndexSize)
	}
	return ix, nil
}

func (p *Profile) tpm2b(b []byte, what string, h uint32) ([]byte, error) {
	n := int(le.Uint16(b))
	if n > p.Index.DigestBufBytes {
		return nil, p.errf("NV index 0x%08x: %s size %d exceeds %d", h, what, n, p.Index.DigestBufBytes)
	}
	return append([]byte(nil), b[2:2+n]...), nil
}

// seedFields are the TPM2B secrets whose size the EK derivation depends on.
var seedFields = []string{"EPSeed", "SPSeed", "PPSeed", "phProof", "shProof", "ehProof"}

func (im *Image) checkFixed() error {
	p := im.Profile
	if fw := im.U32("firmwareV1"); fw != p.FirmwareV1 {
		for _, q := range All() {
			if q != p && q.FirmwareV1 == fw {
				return p.errf("firmwareV1 is 0x%08x, which belongs to profile %s, not %s", fw, q.Name, p.Name)
			}
		}
		return p.errf("firmwareV1 is 0x%08x, this build has 0x%08x", fw, p.FirmwareV1)
	}
	for _, name := range seedFields {
		if n := len(im.TPM2B(name)); n != p.SeedSize {
			return p.errf("%s has size %d, this build uses %d-byte seeds and proofs", name, n, p.SeedSize)
		}
	}
	return nil
}

// Field returns the raw bytes of a fixed field (a view into Fixed).
func (im *Image) Field(name string) []byte {
	off, size := im.Profile.Abs(name)
	return im.Fixed[off : off+size]
}

// U16 reads a 16-bit little-endian field.
func (im *Image) U16(name string) uint16 { return le.Uint16(im.Field(name)) }

// U32 reads a 32-bit little-endian field.
func (im *Image) U32(name string) uint32 { return le.Uint32(im.Field(name)) }

// U64 reads a 64-bit little-endian field.
func (im *Image) U64(name string) uint64 { return le.Uint64(im.Field(name)) }

// TPM2B returns the used part of a TPM2B field (nil if its size is invalid).
func (im *Image) TPM2B(name string) []byte {
	b := im.Field(name)
	n := int(le.Uint16(b))
	if n > len(b)-2 {
		return nil
	}
	return b[2 : 2+n]
}

// SetTPM2B stores v in a TPM2B field, zeroing the rest of its buffer.
func (im *Image) SetTPM2B(name string, v []byte) error {
	b := im.Field(name)
	if len(v) > len(b)-2 {
		return fmt.Errorf("nv: %s holds at most %d bytes", name, len(b)-2)
	}
	le.PutUint16(b, uint16(len(v)))
	copy(b[2:], v)
	clear(b[2+len(v):])
	return nil
}

// Fingerprint is a short non-secret identifier of a secret value.
func Fingerprint(secret []byte) string {
	h := sha256.Sum256(append([]byte("vtpm-mfg fingerprint\x00"), secret...))
	return hex.EncodeToString(h[:8])
}

// Bytes serializes the image.
func (im *Image) Bytes() []byte {
	p := im.Profile
	out := make([]byte, 0, p.NVSize)
	out = append(out, im.Fixed...)
	for _, e := range im.Entries {
		out = append(out, e.encode(p)...)
	}
	term := make([]byte, p.TerminatorSize)
	le.PutUint64(term[4:], im.MaxCounter)
	out = append(out, term...)
	out = append(out, im.Free...)
	if len(out) != p.NVSize {
		panic(fmt.Sprintf("nv: serialized %d bytes, want %d", len(out), p.NVSize))
	}
	return out
}

func (e Entry) size(p *Profile) int {
	if e.Index == nil {
		return 4 + len(e.Object)
	}
	return 4 + p.Index.Size + len(e.Index.Data)
}

func (e Entry) encode(p *Profile) []byte {
	b := make([]byte, 4, e.size(p))
	le.PutUint32(b, uint32(e.size(p)))
	if e.Index == nil {
		return append(b, e.Object...)
	}
	return append(append(b, e.Index.encodeStruct(p)...), e.Index.Data...)
}

func (ix *Index) encodeStruct(p *Profile) []byte {
	L := p.Index
	s := make([]byte, L.Size)
	copy(s, ix.raw)
	le.PutUint32(s, ix.Handle)
	le.PutUint16(s[L.NameAlg:], ix.NameAlg)
	le.PutUint32(s[L.Attributes:], ix.Attributes)
	put2b := func(off int, v []byte) {
		le.PutUint16(s[off:], uint16(len(v)))
		copy(s[off+2:], v)
	}
	put2b(L.AuthPolicy, ix.AuthPolicy)
	le.PutUint16(s[L.DataSize:], ix.DataSize)
	put2b(L.AuthValue, ix.AuthValue)
	return s
}

// FreeBytes is what NvGetFreeBytes reports: NV end minus the terminator's
// offset.
func (im *Image) FreeBytes() int { return len(im.Free) + im.Profile.TerminatorSize }

// Find returns the position of an entry with the given handle, or -1.
func (im *Image) Find(handle uint32) int {
	for i, e := range im.Entries {
		if e.Handle == handle {
			return i
		}
	}
	return -1
}

// Lookup returns the NV index with the given handle, or nil.
func (im *Image) LookupIndex(handle uint32) *Index {
	if i := im.Find(handle); i >= 0 {
		return im.Entries[i].Index
	}
	return nil
}

// Manufacture returns a freshly manufactured image for p, as TPM_Manufacture
// writes it: every deterministic field at its measured default, the seeds,
// proofs and DRBG state fresh from crypto/rand.
func Manufacture(p *Profile) (*Image, error) {
	fixed := make([]byte, p.DynamicStart)
	for _, r := range p.Regions {
		reg := fixed[r.Off : r.Off+r.Size]
		for i := range reg {
			reg[i] = r.Fill
		}
		for _, f := range r.Fields {
			dst := reg[f.Off : f.Off+f.Size]
			copy(dst, f.Default)
			if f.Random {
				if f.Kind == Seed {
					clear(dst)
					le.PutUint16(dst, uint16(p.SeedSize))
					dst = dst[2 : 2+p.SeedSize]
				}
				if _, err := rand.Read(dst); err != nil {
					return nil, err
				}
			}
		}
		for _, f := range r.Fields {
			if f.CopyFrom != "" {
				src := r.find(f.CopyFrom)
				copy(reg[f.Off:f.Off+f.Size], reg[src.Off+f.CopyOff:])
			}
		}
	}
	im := &Image{Profile: p, Fixed: fixed, Free: bytes.Repeat([]byte{p.FreeFill}, p.NVSize-p.DynamicStart-p.TerminatorSize)}
	le.PutUint32(im.Field("firmwareV1"), p.FirmwareV1)
	le.PutUint32(im.Field("firmwareV2"), p.FirmwareV2)
	return im, nil
}

// Detect parses data with every known profile and returns the image of the
// one it fits.
func Detect(data []byte) (*Image, error) {
	var errs []error
	for _, p := range All() {
		im, err := Parse(p, data)
		if err == nil {
			return im, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}
