package nv

import (
	"fmt"
	"strings"

	legacy "github.com/google/go-tpm/legacy/tpm2"
)

// NV index attributes (TPMA_NV) used here.
const (
	AttrPPWrite        = uint32(legacy.AttrPPWrite)
	AttrWriteLocked    = uint32(legacy.AttrWriteLocked)
	AttrWriteDefine    = uint32(legacy.AttrWriteDefine)
	AttrPPRead         = uint32(legacy.AttrPPRead)
	AttrOwnerRead      = uint32(legacy.AttrOwnerRead)
	AttrAuthRead       = uint32(legacy.AttrAuthRead)
	AttrNoDA           = uint32(legacy.AttrNoDA)
	AttrOrderly        = uint32(legacy.AttrOrderly)
	AttrWritten        = uint32(legacy.AttrWritten)
	AttrPlatformCreate = uint32(legacy.AttrPlatformCreate)

	// AttrEKCert are the attributes of a manufacturer-provisioned EK
	// certificate index before it is written (0x42072001).
	AttrEKCert = AttrPPWrite | AttrWriteDefine | AttrPPRead | AttrOwnerRead | AttrAuthRead | AttrNoDA | AttrPlatformCreate

	// TPM_NT field of TPMA_NV and the counter type.
	ntMask    = 0xF0
	ntCounter = 0x10
)

var attrNames = []struct {
	bit  uint32
	name string
}{
	{0x1, "ppwrite"}, {0x2, "ownerwrite"}, {0x4, "authwrite"}, {0x8, "policywrite"},
	{0x400, "policy_delete"}, {0x800, "writelocked"}, {0x1000, "writeall"}, {0x2000, "writedefine"},
	{0x4000, "write_stclear"}, {0x8000, "globallock"}, {0x10000, "ppread"}, {0x20000, "ownerread"},
	{0x40000, "authread"}, {0x80000, "policyread"}, {0x2000000, "no_da"}, {0x4000000, "orderly"},
	{0x8000000, "clear_stclear"}, {0x10000000, "readlocked"}, {0x20000000, "written"},
	{0x40000000, "platformcreate"}, {0x80000000, "read_stclear"},
}

// AttrString names the set attribute bits the way tpm2-tools does.
func AttrString(a uint32) string {
	var s []string
	for _, n := range attrNames {
		if a&n.bit != 0 {
			s = append(s, n.name)
		}
	}
	switch nt := (a & ntMask) >> 4; nt {
	case 0:
	case 1:
		s = append(s, "nt=counter")
	case 2:
		s = append(s, "nt=bits")
	case 4:
		s = append(s, "nt=extend")
	case 8:
		s = append(s, "nt=pin_fail")
	case 9:
		s = append(s, "nt=pin_pass")
	default:
		s = append(s, fmt.Sprintf("nt=%d", nt))
	}
	return strings.Join(s, "|")
}

// IndexSpec is what DefineIndex needs: the public area and the data to
// write (an ordinary index, written in full by TPM2_NV_Write).
type IndexSpec struct {
	Handle     uint32
	NameAlg    uint16 // 0 means SHA-256
	Attributes uint32 // as defined; WRITTEN is added when data is stored
	AuthPolicy []byte
	AuthValue  []byte
	Data       []byte
	// Lock also sets WRITELOCKED, as TPM2_NV_WriteLock does for a
	// WRITEDEFINE index.
	Lock bool
}

// ErrSpace is returned when the TPM would answer TPM_RC_NV_SPACE.
type ErrSpace struct{ Need, Free, Reserved int }

func (e *ErrSpace) Error() string {
	return fmt.Sprintf("not enough NV space: the entry needs %d bytes, %d are free and the TPM keeps %d in reserve", e.Need, e.Free, e.Reserved)
}

func (im *Image) counts() (persistent, counters int) {
	for _, e := range im.Entries {
		if e.Index == nil {
			persistent++
		} else if e.Index.Attributes&ntMask == ntCounter {
			counters++
		}
	}
	return
}

// testSpace mirrors NvTestSpace for an index of the given entry size.
func (im *Image) testSpace(size int, isIndex, isCounter bool) error {
	p := im.Profile
	remain := im.FreeBytes()
	reserved := 4 + p.TerminatorSize
	persistent, counters := im.counts()
	if isIndex && persistent < p.MinEvictObjects {
		reserved += (p.MinEvictObjects - persistent) * p.EvictObjectSize
	}
	if !isCounter && counters < p.MinCounterIndices {
		reserved += (p.MinCounterIndices - counters) * p.CounterIndexSize
	}
	if reserved < remain && size <= remain && size+reserved <= remain {
		return nil
	}
	return &ErrSpace{Need: size, Free: remain, Reserved: reserved}
}

// DefineIndex adds an ordinary NV index with its data, as TPM2_NV_DefineSpace
// followed by TPM2_NV_Write (and optionally TPM2_NV_WriteLock) would: the
// entry is appended after the last one, a new terminator follows it.
func (im *Image) DefineIndex(s IndexSpec) error {
	p := im.Profile
	if s.Handle>>24 != HTNVIndex {
		return fmt.Errorf("0x%08x is not an NV index handle", s.Handle)
	}
	if im.Find(s.Handle) >= 0 {
		return fmt.Errorf("NV index 0x%08x is already defined", s.Handle)
	}
	if s.Attributes&(AttrOrderly|ntMask) != 0 {
		return fmt.Errorf("NV index 0x%08x: only ordinary, non-orderly indices can be written offline", s.Handle)
	}
	if len(s.Data) == 0 {
		return fmt.Errorf("NV index 0x%08x: no data to write", s.Handle)
	}
	if len(s.Data) > p.MaxNVIndexSize {
		return fmt.Errorf("NV index 0x%08x: %d bytes of data exceed MAX_NV_INDEX_SIZE (%d) of this TPM build", s.Handle, len(s.Data), p.MaxNVIndexSize)
	}
	if len(s.AuthPolicy) > p.Index.DigestBufBytes || len(s.AuthValue) > p.Index.DigestBufBytes {
		return fmt.Errorf("NV index 0x%08x: authPolicy/authValue too long", s.Handle)
	}
	if s.Lock && s.Attributes&AttrWriteDefine == 0 {
		return fmt.Errorf("NV index 0x%08x: can only be write-locked for good with WRITEDEFINE", s.Handle)
	}
	entrySize := p.Index.Size + len(s.Data)
	if err := im.testSpace(entrySize, true, false); err != nil {
		return fmt.Errorf("NV index 0x%08x: %w", s.Handle, err)
	}
	nameAlg := s.NameAlg
	if nameAlg == 0 {
		nameAlg = 0x000B
	}
	attrs := s.Attributes | AttrWritten
	if s.Lock {
		attrs |= AttrWriteLocked
	}
	ix := &Index{
		Handle: s.Handle, NameAlg: nameAlg, Attributes: attrs,
		AuthPolicy: append([]byte(nil), s.AuthPolicy...), DataSize: uint16(len(s.Data)),
		AuthValue: append([]byte(nil), s.AuthValue...), Data: append([]byte(nil), s.Data...),
	}
	e := Entry{Index: ix, Handle: s.Handle}
	n := e.size(p)
	im.Entries = append(im.Entries, e)
	im.Free = im.Free[n:]
	return nil
}

// Delete removes an entry as NvDelete does: later entries move down, a new
// terminator follows the last one, and the reclaimed bytes are erased.
func (im *Image) Delete(handle uint32) error {
	i := im.Find(handle)
	if i < 0 {
		return fmt.Errorf("0x%08x is not defined", handle)
	}
	n := im.Entries[i].size(im.Profile)
	im.Entries = append(im.Entries[:i:i], im.Entries[i+1:]...)
	erased := make([]byte, n, n+len(im.Free))
	for j := range erased {
		erased[j] = im.Profile.FreeFill
	}
	im.Free = append(erased, im.Free...)
	return nil
}

// SetWriteLock sets WRITELOCKED on an index, as TPM2_NV_WriteLock does.
func (im *Image) SetWriteLock(handle uint32) error {
	ix := im.LookupIndex(handle)
	if ix == nil {
		return fmt.Errorf("NV index 0x%08x is not defined", handle)
	}
	if ix.Attributes&AttrWriteDefine == 0 {
		return fmt.Errorf("NV index 0x%08x has no WRITEDEFINE; a lock would not survive a reboot", handle)
	}
	ix.Attributes |= AttrWriteLocked
	return nil
}
