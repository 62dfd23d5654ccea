package container

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/cocoonfs"
	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
)

// What upstream SVSM keeps in CocoonFS for its vTPM: inode numbers carry
// the service in their high 32 bits (1: TPM, 2: UEFI variables).
const (
	NVChipInode = 0x1_0000_0000
	MarkerInode = 0x1_0000_0001
	// Marker is the content of the "manufactured" marker; without it the
	// SVSM re-manufactures the TPM at boot.
	Marker = "COCONUT-SVSM"
	// DefaultCocoonSize is the image size of the upstream documentation.
	DefaultCocoonSize = 8 << 20
	// MaxCocoonSize bounds the images read and written (each is held in
	// memory while it is authenticated or written).
	MaxCocoonSize = 1 << 30
	// rewriteReserve is free space kept beyond the files so that the SVSM
	// can rewrite the NVChip through its journal (a new copy of the file
	// plus journal blocks). Measured with the reference implementation on
	// images of this package's layout: an NVChip rewrite needs 44544 bytes
	// of image (AES-128) or 46592 (AES-256); the reference tool's own
	// smallest images holding both TPM files (26112, 32768 bytes) cannot
	// rewrite the NVChip at all (NoSpace).
	rewriteReserve = 16384 + 8192
)

type cocoon struct{}

func init() { register(cocoon{}) }

func (cocoon) Name() string { return "cocoonfs" }

func (cocoon) Detect(head []byte) bool { return cocoonfs.Detect(head) != cocoonfs.KindUnknown }

// CocoonInfo describes a CocoonFS image.
type CocoonInfo struct {
	FormatVersion     int          `json:"format_version"`
	AllocationBlock   int          `json:"allocation_block_bytes"`
	IOBlock           int          `json:"io_block_bytes"`
	AuthTreeNode      int          `json:"auth_tree_node_bytes"`
	AuthTreeDataBlock int          `json:"auth_tree_data_block_bytes"`
	BitmapFileBlock   int          `json:"allocation_bitmap_file_block_bytes"`
	IndexLeafNode     int          `json:"inode_index_leaf_node_bytes"`
	IndexInternalNode int          `json:"inode_index_internal_node_bytes"`
	AuthTreeNodeHash  string       `json:"auth_tree_node_hash"`
	AuthTreeDataHMAC  string       `json:"auth_tree_data_hmac"`
	AuthTreeRootHMAC  string       `json:"auth_tree_root_hmac"`
	PreauthHMAC       string       `json:"preauth_cca_protection_hmac"`
	KDFHash           string       `json:"kdf_hash"`
	Cipher            string       `json:"cipher"`
	FilesystemSize    uint64       `json:"filesystem_size"`
	SaltLen           int          `json:"salt_len"`
	AuthTreeLevels    int          `json:"auth_tree_levels"`
	IndexLevels       int          `json:"inode_index_levels"`
	AllocatedBytes    uint64       `json:"allocated_bytes"`
	FreeBytes         uint64       `json:"free_bytes"`
	RewriteFreeBytes  uint64       `json:"rewrite_needs_free_bytes"`
	AuxMetadataBytes  int          `json:"aux_metadata_bytes"`
	UpdateCounter     string       `json:"update_counter"`
	Inodes            []InodeEntry `json:"inodes"`
}

// InodeEntry is one file of a CocoonFS image.
type InodeEntry struct {
	Inode     uint64 `json:"inode"`
	Namespace uint32 `json:"namespace"`
	Number    uint32 `json:"number"`
	Size      int    `json:"size"`
	Flags     uint32 `json:"flags"`
	What      string `json:"what,omitempty"`
}

func inodeWhat(n uint64) string {
	switch {
	case n == NVChipInode:
		return "vTPM NVChip"
	case n == MarkerInode:
		return "vTPM manufactured marker"
	case n>>32 == 1:
		return "vTPM"
	case n>>32 == 2:
		return "UEFI variables"
	}
	return ""
}

func cocoonInfo(fs *cocoonfs.FS) *CocoonInfo {
	l := fs.Info.Layout
	ab := 128 << l.AllocBlock128Log2
	ci := &CocoonInfo{
		FormatVersion:     cocoonfs.FormatVersion,
		AllocationBlock:   ab,
		IOBlock:           ab << l.IOBlockAllocBlocksLog2,
		AuthTreeNode:      ab << l.IOBlockAllocBlocksLog2 << l.AuthTreeNodeIOBlocksLog2,
		AuthTreeDataBlock: ab << l.AuthTreeDataBlockLog2,
		BitmapFileBlock:   ab << l.BitmapFileBlockLog2,
		IndexLeafNode:     ab << l.IndexLeafLog2,
		IndexInternalNode: ab << l.IndexInternalLog2,
		AuthTreeNodeHash:  cocoonfs.HashName(l.AuthTreeNodeHash),
		AuthTreeDataHMAC:  cocoonfs.HashName(l.AuthTreeDataHMAC),
		AuthTreeRootHMAC:  cocoonfs.HashName(l.AuthTreeRootHMAC),
		PreauthHMAC:       cocoonfs.HashName(l.PreauthHMAC),
		KDFHash:           cocoonfs.HashName(l.KDFHash),
		Cipher:            fmt.Sprintf("AES-%d-CBC", l.BlockCipherKeyBits),
		FilesystemSize:    fs.Info.ImageBytes,
		SaltLen:           len(fs.Info.Salt),
		AuthTreeLevels:    fs.Info.AuthTreeLevels,
		IndexLevels:       fs.Info.IndexLevels,
		AllocatedBytes:    fs.Info.AllocatedABs * uint64(ab),
		AuxMetadataBytes:  len(fs.Info.AuxMetadata),
		Inodes:            []InodeEntry{},
	}
	if ci.FilesystemSize > ci.AllocatedBytes {
		ci.FreeBytes = ci.FilesystemSize - ci.AllocatedBytes
	}
	ci.RewriteFreeBytes = RewriteFree
	c := fs.Info.UpdateCounter
	rev := make([]byte, len(c))
	for i := range c {
		rev[i] = c[len(c)-1-i]
	}
	ci.UpdateCounter = new(big.Int).SetBytes(rev).String()
	for _, in := range fs.Inodes {
		ci.Inodes = append(ci.Inodes, InodeEntry{Inode: in.Number, Namespace: uint32(in.Number >> 32), Number: uint32(in.Number), Size: len(in.Data), Flags: in.Flags, What: inodeWhat(in.Number)})
	}
	return ci
}

// readImage reads a whole CocoonFS image file.
func readImage(path string, f *os.File) ([]byte, os.FileInfo, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %s", path, atomicfile.ErrText(err))
	}
	if st.Size() > MaxCocoonSize {
		return nil, nil, fmt.Errorf("%s: a CocoonFS image of %d bytes is larger than this tool reads (%d bytes); vTPM images need only a few MiB", path, st.Size(), int64(MaxCocoonSize))
	}
	img := make([]byte, st.Size())
	if _, err := io.ReadFull(f, img); err != nil {
		return nil, nil, fmt.Errorf("%s: cannot read the state image: %s; check the disk and the file", path, atomicfile.ErrText(err))
	}
	return img, st, nil
}

// openFS authenticates an image and finds its NVChip.
func openFS(path string, img, key []byte) (*cocoonfs.FS, []byte, error) {
	fs, err := cocoonfs.Open(img, key)
	switch {
	case errors.Is(err, cocoonfs.ErrWrongKey):
		return nil, nil, fmt.Errorf("%s: wrong key, or a damaged or modified CocoonFS image: it does not authenticate under this key; %s", path, wrongKeyRemedy)
	case err != nil && !strings.Contains(err.Error(), ";"):
		return nil, nil, fmt.Errorf("%s: CocoonFS: %w; %s", path, err, damagedRemedy)
	case err != nil: // says what to do itself
		return nil, nil, fmt.Errorf("%s: CocoonFS: %w", path, err)
	}
	nvi, ok := fs.Lookup(NVChipInode)
	if !ok {
		return nil, nil, fmt.Errorf("%s: the CocoonFS image holds no vTPM NVChip (inode 0x%x): the SVSM would manufacture a new TPM at boot; create one with manufacture or pack", path, uint64(NVChipInode))
	}
	if len(nvi.Data) != 16384 {
		return nil, nil, fmt.Errorf("%s: the vTPM NVChip (inode 0x%x) is %d bytes, not 16384: the SVSM would re-manufacture this TPM; %s", path, uint64(NVChipInode), len(nvi.Data), damagedRemedy)
	}
	return fs, nvi.Data, nil
}

func markerFindings(fs *cocoonfs.FS) []string {
	m, ok := fs.Lookup(MarkerInode)
	switch {
	case !ok:
		return []string{fmt.Sprintf("no \"manufactured\" marker (inode 0x%x): the SVSM would re-manufacture this TPM at boot, discarding its identity", uint64(MarkerInode))}
	case string(m.Data) != Marker:
		return []string{fmt.Sprintf("the \"manufactured\" marker (inode 0x%x) is %q, not %q: the SVSM would re-manufacture this TPM at boot", uint64(MarkerInode), m.Data, Marker)}
	}
	return nil
}

// RewriteFree is the free space the SVSM needs in a CocoonFS image to
// rewrite its NVChip (a new copy of the 16 KiB file through the journal).
// Measured with the reference implementation (cocoonfs-cli 0.1.2, mkfs
// -H sha2 -C aes at -t 128 and 256, images in 512-byte steps): an NVChip
// rewrite succeeded with 17280 bytes free and failed with 16768.
const RewriteFree = 17280

// headroomFindings reports an image in which the SVSM could not save its
// TPM's state.
func headroomFindings(fs *cocoonfs.FS) []string {
	ab := uint64(128) << fs.Info.Layout.AllocBlock128Log2
	used := fs.Info.AllocatedABs * ab
	free := uint64(0)
	if fs.Info.ImageBytes > used {
		free = fs.Info.ImageBytes - used
	}
	if free >= RewriteFree {
		return nil
	}
	return []string{fmt.Sprintf("only %d bytes of the CocoonFS image are free, and the SVSM needs %d free bytes to rewrite its NVChip: it could never save this TPM's state; re-create the image at least %d bytes larger (vtpm-mfg unpack, then pack it into a larger image)", free, RewriteFree, RewriteFree-free)}
}

func (cocoon) Read(path string, key []byte) ([]byte, *Info, error) {
	f, _, err := input.Open(path, "state image")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	img, st, err := readImage(path, f)
	if err != nil {
		return nil, nil, err
	}
	fs, nvb, err := openFS(path, img, key)
	if err != nil {
		return nil, nil, err
	}
	info := &Info{Path: path, Container: "cocoonfs", ImageSize: st.Size(), CocoonFS: cocoonInfo(fs), Findings: append(markerFindings(fs), headroomFindings(fs)...)}
	info.AllocatedSize = atomicfile.Allocated(st)
	return append([]byte(nil), nvb...), info, nil
}

func cocoonLayout(strength int) (cocoonfs.Layout, error) {
	if strength == 0 {
		strength = 128
	}
	return cocoonfs.DefaultLayout(strength)
}

func tpmInodes(nvchip []byte) []cocoonfs.Inode {
	return []cocoonfs.Inode{{Number: NVChipInode, Data: nvchip}, {Number: MarkerInode, Data: []byte(Marker)}}
}

// minBytes is the smallest image holding inodes with room for the SVSM to
// rewrite the NVChip.
func minBytes(l cocoonfs.Layout, inodes []cocoonfs.Inode) int64 {
	probe := append(append([]cocoonfs.Inode(nil), inodes...), cocoonfs.Inode{Number: ^uint64(0), Data: make([]byte, rewriteReserve)})
	fits := func(n uint64) bool {
		_, err := cocoonfs.Write(cocoonfs.WriteOptions{Key: []byte{0}, Layout: l, ImageBytes: n, Inodes: probe, ZeroFree: true})
		return err == nil
	}
	lo, hi := uint64(512), uint64(64<<10)
	for !fits(hi) {
		lo, hi = hi, hi*2
	}
	for lo < hi {
		m := (lo + hi) / 2 / 512 * 512
		if m < lo {
			m = lo
		}
		if fits(m) {
			hi = m
		} else {
			lo = m + 512
		}
	}
	return int64(lo)
}

var minSizes sync.Map // strength -> int64

func (cocoon) MinSize(o CreateOptions) int64 {
	if v, ok := minSizes.Load(o.Strength); ok {
		return v.(int64)
	}
	l, err := cocoonLayout(o.Strength)
	if err != nil {
		return 0
	}
	n := minBytes(l, tpmInodes(make([]byte, 16384)))
	minSizes.Store(o.Strength, n)
	return n
}

func (cocoon) MaxSize(CreateOptions) int64 { return MaxCocoonSize }

// CheckSize also requires whole IO Blocks: the reference implementation
// rounds other sizes down, so the image would not be the size asked for.
func (c cocoon) CheckSize(size int64, o CreateOptions) error {
	l, err := cocoonLayout(o.Strength)
	if err != nil {
		return err
	}
	return checkSize(c, size, o, int64(l.IOBlockSize()))
}

func (c cocoon) Prepare(path string, key, nvchip []byte, o CreateOptions) (func(*os.File) error, error) {
	l, err := cocoonLayout(o.Strength)
	if err != nil {
		return nil, err
	}
	size := o.Size
	if size == 0 {
		size = DefaultCocoonSize
	}
	if err := c.CheckSize(size, o); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	img, err := cocoonfs.Write(cocoonfs.WriteOptions{Key: key, Layout: l, ImageBytes: uint64(size), Inodes: tpmInodes(nvchip), ZeroFree: o.ZeroFree})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return func(f *os.File) error { return writeSparse(f, img, size) }, nil
}

// writeSparse writes img at the start of f, leaving zero blocks as holes,
// and sizes f to size bytes.
func writeSparse(f *os.File, img []byte, size int64) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	const chunk = 4096
	// Write each run of non-zero chunks with one call.
	for off := 0; off < len(img); {
		for off < len(img) && allZero(img[off:min(off+chunk, len(img))]) {
			off += chunk
		}
		end := off
		for end < len(img) && !allZero(img[end:min(end+chunk, len(img))]) {
			end += chunk
		}
		end = min(end, len(img))
		if end > off {
			if _, err := f.WriteAt(img[off:end], int64(off)); err != nil {
				return err
			}
		}
		off = end
	}
	return nil
}

func (cocoon) Update(path string, oldKey, newKey []byte, change func([]byte) ([]byte, error)) ([]string, error) {
	rw, err := atomicfile.BeginRewrite(path)
	if err != nil {
		return nil, err
	}
	defer rw.Close()
	img, st, err := readImage(path, rw.File)
	if err != nil {
		return nil, err
	}
	fs, nvb, err := openFS(path, img, oldKey)
	if err != nil {
		return nil, err
	}
	if change != nil {
		if f := markerFindings(fs); len(f) > 0 {
			return nil, fmt.Errorf("%s: %s; manufacture a new image instead", path, f[0])
		}
		out, err := change(append([]byte(nil), nvb...))
		if err != nil {
			return nil, err
		}
		if out != nil {
			nvb = out
		}
	}
	if newKey == nil {
		newKey = oldKey
	}
	inodes := make([]cocoonfs.Inode, len(fs.Inodes))
	copy(inodes, fs.Inodes)
	for i := range inodes {
		if inodes[i].Number == NVChipInode {
			inodes[i].Data = nvb
		}
	}
	counter := fs.Info.UpdateCounter
	for i := range counter { // the counter moves on, modulo 2^128
		counter[i]++
		if counter[i] != 0 {
			break
		}
	}
	// An image whose free space is holes (made with zero free space) stays
	// that way; one filled with noise gets fresh noise.
	sparse := atomicfile.Allocated(st) >= 0 && atomicfile.Allocated(st) < st.Size()/2
	aux := bytes.Clone(fs.Info.AuxMetadata)
	layout, imageBytes := fs.Info.Layout, fs.Info.ImageBytes
	// The old image is no longer needed: let its memory serve the new one
	// (peak memory stays near one image's size, not two).
	img, fs = nil, nil
	runtime.GC()
	out, err := cocoonfs.Write(cocoonfs.WriteOptions{
		Key: newKey, Layout: layout, ImageBytes: imageBytes, Inodes: inodes,
		Aux: aux, NoAux: aux == nil, Counter: &counter, ZeroFree: sparse,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w; %s is unchanged", path, err, path)
	}
	// Prove the new image before it replaces the old one.
	check, err := cocoonfs.Open(out, newKey)
	if err != nil || len(check.Inodes) != len(inodes) {
		return nil, fmt.Errorf("%s: internal error: the rewritten image does not read back (%v); %s is unchanged", path, err, path)
	}
	for i, in := range check.Inodes {
		if in.Number != inodes[i].Number || in.Flags != inodes[i].Flags || !bytes.Equal(in.Data, inodes[i].Data) {
			return nil, fmt.Errorf("%s: internal error: inode 0x%x differs after the rewrite; %s is unchanged", path, in.Number, path)
		}
	}
	return headroomFindings(check), rw.Commit(func(tmp *os.File) error { return writeSparse(tmp, out, st.Size()) })
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}
