package cocoonfs

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic strings of the two header types.
const (
	MagicFS       = "COCOONFS"
	MagicMkfsInfo = "CCFSMKFS"
)

// ErrNotFormatted reports an image that holds only a filesystem creation
// info header: the SVSM formats it on first open, with a random vTPM.
var ErrNotFormatted = errors.New("not yet formatted: the image holds only a CocoonFS creation info header (CCFSMKFS); the SVSM would format it at first boot and manufacture a TPM of its own")

// staticHeader is the decoded static image header.
type staticHeader struct {
	layout Layout
	salt   []byte
}

// staticHeaderLen is the encoded length of the static header before its
// IO Block padding.
func staticHeaderLen(l Layout, saltLen int) int {
	return 8 + 1 + layoutLen + 1 + l.integrityLen() + saltLen
}

// staticHeaderBlocks is the static header's length, IO Block aligned, in
// Allocation Blocks.
func staticHeaderBlocks(l Layout, saltLen int) uint64 {
	io := l.IOBlockSize()
	n := (staticHeaderLen(l, saltLen) + io - 1) / io * io
	return uint64(n / l.allocBlockSize())
}

// encodeStaticHeader returns the protected static header, IO Block padded.
func encodeStaticHeader(l Layout, salt []byte) []byte {
	b := make([]byte, staticHeaderBlocks(l, len(salt))*uint64(l.allocBlockSize()))
	copy(b, MagicFS)
	b[8] = FormatVersion
	copy(b[9:], l.Encode())
	b[9+layoutLen] = byte(len(salt))
	copy(b[9+layoutLen+1+l.integrityLen():], salt)
	l.applyIntegrity(b, 8, 1+layoutLen+1)
	return b
}

// peekLayout reads the image layout and salt length from the (masked)
// start of a header: they sit in the tier 0 realm, masked with the byte
// stored right after the commit ID.
func peekLayout(first []byte, sectionOff int) (Layout, error) {
	if len(first) < 128 {
		return Layout{}, errors.New("header truncated")
	}
	mask := first[8+sectionOff+checksumLen]
	var lb [layoutLen]byte
	for i := range lb {
		lb[i] = first[9+i] ^ mask
	}
	if v := first[8] ^ mask; v != FormatVersion {
		return Layout{}, fmt.Errorf("format version %d is not supported (this tool knows CocoonFS version %d)", v, FormatVersion)
	}
	return decodeLayout(lb[:])
}

// decodeStaticHeader verifies and decodes the static header at the start
// of img (at least one IO Block).
func decodeStaticHeader(img []byte) (*staticHeader, error) {
	if len(img) < 128 || string(img[:8]) != MagicFS {
		return nil, errors.New("no CocoonFS header")
	}
	l, err := peekLayout(img, 1+layoutLen+1)
	if err != nil {
		return nil, err
	}
	mask := img[8+1+layoutLen+1+checksumLen]
	saltLen := int(img[9+layoutLen] ^ mask)
	n := int(staticHeaderBlocks(l, saltLen)) * l.allocBlockSize()
	if len(img) < n {
		return nil, errors.New("static header truncated")
	}
	b := append([]byte(nil), img[:n]...)
	if err := l.verifyIntegrity(b, 8, 1+layoutLen+1); err != nil {
		return nil, fmt.Errorf("static header: %w", err)
	}
	off := 9 + layoutLen + 1 + l.integrityLen()
	return &staticHeader{layout: l, salt: append([]byte(nil), b[off:off+saltLen]...)}, nil
}

// MkfsInfo is a decoded filesystem creation info header.
type MkfsInfo struct {
	Layout     Layout
	Salt       []byte
	ImageBytes uint64
	AuxLen     uint64
}

// decodeMkfsInfoHeader verifies and decodes a creation info header.
func decodeMkfsInfoHeader(img []byte) (*MkfsInfo, error) {
	const sectionOff = 1 + layoutLen + 8 + 8 + 1
	if len(img) < 128 || string(img[:8]) != MagicMkfsInfo {
		return nil, errors.New("no creation info header")
	}
	l, err := peekLayout(img, sectionOff)
	if err != nil {
		return nil, err
	}
	mask := img[8+sectionOff+checksumLen]
	saltLen := int(img[8+sectionOff-1] ^ mask)
	n := (8 + sectionOff + l.integrityLen() + saltLen + l.IOBlockSize() - 1) / l.IOBlockSize() * l.IOBlockSize()
	if len(img) < n {
		return nil, errors.New("creation info header truncated")
	}
	b := append([]byte(nil), img[:n]...)
	if err := l.verifyIntegrity(b, 8, sectionOff); err != nil {
		return nil, fmt.Errorf("creation info header: %w", err)
	}
	off := 8 + sectionOff + l.integrityLen()
	return &MkfsInfo{
		Layout:     l,
		Salt:       append([]byte(nil), b[off:off+saltLen]...),
		AuxLen:     binary.LittleEndian.Uint64(b[9+layoutLen:]),
		ImageBytes: binary.LittleEndian.Uint64(b[9+layoutLen+8:]) * uint64(l.allocBlockSize()),
	}, nil
}

// counterLen is the encrypted update counter's length: 16 bytes rounded up
// to the cipher block (AES: 16).
const counterLen = 16

// mutableHeader is the decoded mutable image header.
type mutableHeader struct {
	auxHeads  [2]uint64 // encoded extent pointers
	rootHMAC  []byte
	counter   []byte // encrypted update counter
	preauth   []byte // entry leaf node preauthentication HMAC
	entryLeaf uint64 // Allocation Block of the inode index entry leaf
	imageSize uint64 // in Allocation Blocks
}

func mutableHeaderLen(l Layout) int {
	return 16 + digestLen(l.AuthTreeRootHMAC) + counterLen + digestLen(l.PreauthHMAC) + 8 + 8
}

// mutableHeaderExtent is where the mutable header lives.
func mutableHeaderExtent(l Layout, saltLen int) Extent {
	ab := l.allocBlockSize()
	return Extent{Begin: staticHeaderBlocks(l, saltLen), Len: uint64((mutableHeaderLen(l) + ab - 1) / ab)}
}

// journalHeadExtent is where the journal log head lives: the first IO
// Block and Authentication Tree Data Block aligned boundary after the
// mutable header, as long as the minimal chained-extents head rounded up
// to that alignment.
func journalHeadExtent(l Layout, saltLen int) Extent {
	m := mutableHeaderExtent(l, saltLen)
	a := uint64(1) << l.ioAlignLog2()
	begin := (m.End() + a - 1) / a * a
	ab := uint64(l.allocBlockSize())
	// magic, integrity section, two aux pointers, IV, inline HMAC, then
	// one cipher block holding at least the next-extent pointer.
	min := uint64(8+l.integrityLen()+16+16+digestLen(l.PreauthHMAC)) + 16
	n := (min + ab - 1) / ab
	n = (n + a - 1) / a * a
	return Extent{Begin: begin, Len: n}
}

func (m *mutableHeader) encode(l Layout) []byte {
	b := make([]byte, 0, mutableHeaderLen(l))
	b = binary.LittleEndian.AppendUint64(b, m.auxHeads[0])
	b = binary.LittleEndian.AppendUint64(b, m.auxHeads[1])
	b = append(b, m.rootHMAC...)
	b = append(b, m.counter...)
	b = append(b, m.preauth...)
	b = binary.LittleEndian.AppendUint64(b, encodeBlockPtr(m.entryLeaf))
	b = binary.LittleEndian.AppendUint64(b, m.imageSize)
	return b
}

func decodeMutableHeader(l Layout, b []byte) (*mutableHeader, error) {
	if len(b) < mutableHeaderLen(l) {
		return nil, errors.New("mutable header truncated")
	}
	m := &mutableHeader{}
	m.auxHeads[0] = binary.LittleEndian.Uint64(b)
	m.auxHeads[1] = binary.LittleEndian.Uint64(b[8:])
	p := 16
	take := func(n int) []byte { r := append([]byte(nil), b[p:p+n]...); p += n; return r }
	m.rootHMAC = take(digestLen(l.AuthTreeRootHMAC))
	m.counter = take(counterLen)
	m.preauth = take(digestLen(l.PreauthHMAC))
	leaf, ok, err := decodeBlockPtr(binary.LittleEndian.Uint64(b[p:]))
	if err != nil || !ok {
		return nil, errors.New("mutable header: invalid inode index entry leaf pointer")
	}
	m.entryLeaf = leaf
	m.imageSize = binary.LittleEndian.Uint64(b[p+8:])
	if m.imageSize == 0 || m.imageSize%(1<<l.IOBlockAllocBlocksLog2) != 0 || m.imageSize>>(57-l.AllocBlock128Log2) != 0 {
		return nil, errors.New("mutable header: invalid image size")
	}
	return m, nil
}

// errAuth reports data that does not authenticate under the key.
var errAuth = errors.New("authentication failed")
