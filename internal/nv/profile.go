// Package nv models the NV memory image ("NVChip") of the TCG TPM 2.0
// reference implementation as the COCONUT-SVSM builds it: the fixed regions
// (PERSISTENT_DATA, STATE_RESET_DATA, STATE_CLEAR_DATA, ORDERLY_DATA, the
// orderly-index RAM image) and the dynamic list of NV indices and persistent
// objects. Every build is described by a Profile table of measured offsets,
// sizes and manufacture defaults; the code never guesses padding.
package nv

import (
	"fmt"
	"sort"
	"strings"
)

// Kind says how a field is interpreted.
type Kind int

const (
	Bytes Kind = iota // opaque bytes
	U8
	U16
	U32
	U64
	TPM2B  // u16 size + fixed buffer
	Secret // a secret (auth value, DRBG state): never printed, only fingerprinted
	Seed   // TPM2B primary seed or proof: secret, and its size must be the profile's SeedSize
	Auth   // TPM2B authorization value or nonce: secret
)

// Field is one member of a fixed NV structure.
type Field struct {
	Name string
	Off  int // offset inside its region
	Size int
	Kind Kind
	// Default is the value a fresh manufacture writes (little-endian for
	// integers); missing trailing bytes take the region's Fill.
	Default []byte
	// Random fields are fresh from crypto/rand at manufacture: a Seed gets
	// the profile's seed size and random bytes, other kinds random bytes.
	Random bool
	// CopyFrom names a field (same region) whose bytes from CopyOff on this
	// field repeats at manufacture (the DRBG's lastValue equals its V).
	CopyFrom string
	CopyOff  int
}

// Region is one fixed NV structure at a fixed offset.
type Region struct {
	Name string
	Off  int
	Size int
	// Fill is the manufacture value of every byte not covered by a field's
	// Default (struct padding included), as measured.
	Fill   byte
	Fields []Field
}

// IndexLayout is the in-NV layout of NV_INDEX.
type IndexLayout struct {
	Size                      int // sizeof(NV_INDEX)
	NameAlg, Attributes       int
	AuthPolicy, DataSize      int
	AuthValue, DigestBufBytes int // TPM2B_DIGEST/AUTH buffer size
}

// Profile describes one TPM build.
type Profile struct {
	Name        string
	Description string
	TCGCommit   string

	// TPM properties reported by TPM2_GetCapability.
	Manufacturer uint32 // TPM_PT_MANUFACTURER
	VendorString string // TPM_PT_VENDOR_STRING_1..
	FirmwareV1   uint32
	FirmwareV2   uint32
	SpecFamily   string
	SpecLevel    int
	SpecRevision int // TPM_PT_REVISION (e.g. 183 for 1.83)
	// RSACandidate names how this build turns DRBG bytes into RSA prime
	// candidates (package ek, ModeByName).
	RSACandidate string
	// Container names the state image format the SVSM line using this
	// build keeps the NVChip in (package container).
	Container string
	// Attestation says that the SVSM line using this build has the SVSM
	// attestation protocol, whose vTPM service manifest is the L-1 EK's
	// TPMT_PUBLIC (package attest).
	Attestation bool
	// Switches are the build's algorithm switches (ALG_SHA512, RSA_4096,
	// ECC_NIST_P384, ...), as measured; absent means not built.
	Switches map[string]bool

	NVSize       int
	SeedSize     int
	Regions      []Region
	DynamicStart int // NV_USER_DYNAMIC
	Index        IndexLayout

	EvictObjectSize   int // NV_EVICT_OBJECT_SIZE
	CounterIndexSize  int // NV_INDEX_COUNTER_SIZE
	MinEvictObjects   int
	MinCounterIndices int
	MaxNVIndexSize    int
	TerminatorSize    int
	FreeFill          byte // erase value of unused NV
}

// Region returns the region with the given name.
func (p *Profile) Region(name string) *Region {
	for i := range p.Regions {
		if p.Regions[i].Name == name {
			return &p.Regions[i]
		}
	}
	return nil
}

// Lookup finds a field as "REGION.field" or by its bare name (first match).
func (p *Profile) Lookup(name string) (*Region, *Field) {
	for i := range p.Regions {
		if f := p.Regions[i].find(name); f != nil {
			return &p.Regions[i], f
		}
	}
	if reg, fld, ok := strings.Cut(name, "."); ok {
		if r := p.Region(reg); r != nil {
			if f := r.find(fld); f != nil {
				return r, f
			}
		}
	}
	return nil, nil
}

// find returns the field with the given name, or nil.
func (r *Region) find(name string) *Field {
	for i := range r.Fields {
		if r.Fields[i].Name == name {
			return &r.Fields[i]
		}
	}
	return nil
}

// Abs returns the absolute NV offset of a field.
func (p *Profile) Abs(name string) (off, size int) {
	r, f := p.Lookup(name)
	if f == nil {
		panic("nv: no field " + name + " in profile " + p.Name)
	}
	return r.Off + f.Off, f.Size
}

// Validate checks a profile table for internal consistency: regions are
// contiguous, fields lie inside their region and do not overlap.
func (p *Profile) Validate() error {
	at := 0
	for _, r := range p.Regions {
		if r.Off != at {
			return fmt.Errorf("profile %s: region %s at %d, expected %d", p.Name, r.Name, r.Off, at)
		}
		at += r.Size
		fs := append([]Field(nil), r.Fields...)
		sort.Slice(fs, func(i, j int) bool { return fs[i].Off < fs[j].Off })
		end := 0
		for _, f := range fs {
			if f.Off < end || f.Off+f.Size > r.Size || len(f.Default) > f.Size {
				return fmt.Errorf("profile %s: field %s.%s out of place", p.Name, r.Name, f.Name)
			}
			if f.CopyFrom != "" {
				if src := r.find(f.CopyFrom); src == nil || f.CopyOff+f.Size > src.Size {
					return fmt.Errorf("profile %s: field %s.%s copies from a missing or too short field %q", p.Name, r.Name, f.Name, f.CopyFrom)
				}
			}
			end = f.Off + f.Size
		}
	}
	if at != p.DynamicStart {
		return fmt.Errorf("profile %s: regions end at %d, dynamic area starts at %d", p.Name, at, p.DynamicStart)
	}
	return nil
}

var profiles = map[string]*Profile{}

func register(p *Profile) *Profile {
	if err := p.Validate(); err != nil {
		panic(err)
	}
	profiles[p.Name] = p
	return p
}

// DefaultProfile is the profile used when none is named.
const DefaultProfile = "svsm-poc"

// Get returns a profile by name.
func Get(name string) (*Profile, error) {
	if p, ok := profiles[name]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("unknown TPM profile %q (known: %s)", name, strings.Join(Names(), ", "))
}

// Names lists the known profiles.
func Names() []string {
	var n []string
	for k := range profiles {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// All returns every profile, sorted by name.
func All() []*Profile {
	var ps []*Profile
	for _, n := range Names() {
		ps = append(ps, profiles[n])
	}
	return ps
}

// little-endian helpers for table literals
func le16(v uint16) []byte { return []byte{byte(v), byte(v >> 8)} }
func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
func le64(v uint64) []byte { return append(le32(uint32(v)), le32(uint32(v>>32))...) }
func rep(b byte, n int) []byte {
	s := make([]byte, n)
	for i := range s {
		s[i] = b
	}
	return s
}
func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
