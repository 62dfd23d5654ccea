// Package blockfs reads and writes the SVSM vTPM state image ("BlockFS"):
// sector 0 holds postcard-encoded metadata {magic, size}, sectors 1..32 hold
// the 16 KiB NVChip, every sector XTS-encrypted with tweak 0. Writes are
// atomic and only the sectors in use are touched; holes stay holes.
package blockfs

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/xts"
)

const (
	// SectorSize is the block size of the state device.
	SectorSize = xts.SectorSize
	// Magic is the metadata magic number.
	Magic = 0xDEADBEEF
	// NVSize is the only NVChip size the SVSM's TPM accepts.
	NVSize = 16384
	// Capacity is the byte capacity of the NVChip file inside the image.
	Capacity = 32768
	// UsedSectors is the number of sectors holding data (metadata + NVChip).
	UsedSectors = 1 + NVSize/SectorSize
	// MinImageSize is the smallest image that can hold a 16 KiB NVChip.
	MinImageSize = UsedSectors * SectorSize
	// DefaultImageSize is the size the SVSM demo creates (truncate -s16M).
	DefaultImageSize = 16 << 20
)

// Metadata is the plaintext of sector 0.
type Metadata struct {
	Magic uint32
	Size  uint64
}

// putUvarint appends x as an unsigned LEB128 varint (postcard encoding).
func putUvarint(b []byte, x uint64) []byte {
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}

// uvarint decodes a varint of at most maxBytes bytes, as postcard does for
// the type's width (u32: 5 bytes, u64: 10 bytes).
func uvarint(b []byte, maxBytes int, bits uint) (uint64, int, error) {
	var x uint64
	for i := 0; i < maxBytes && i < len(b); i++ {
		c := b[i]
		x |= uint64(c&0x7f) << (7 * uint(i))
		if c < 0x80 {
			if bits < 64 && x>>bits != 0 {
				return 0, 0, errors.New("varint overflows its type")
			}
			if i == maxBytes-1 && bits == 64 && c > 1 {
				return 0, 0, errors.New("varint overflows its type")
			}
			return x, i + 1, nil
		}
	}
	return 0, 0, errors.New("varint does not terminate")
}

// Encode returns the 512-byte plaintext metadata sector.
func (m Metadata) Encode() []byte {
	b := putUvarint(nil, uint64(m.Magic))
	b = putUvarint(b, m.Size)
	s := make([]byte, SectorSize)
	copy(s, b)
	return s
}

// DecodeMetadata parses a plaintext metadata sector.
func DecodeMetadata(s []byte) (Metadata, error) {
	magic, n, err := uvarint(s, 5, 32)
	if err != nil {
		return Metadata{}, fmt.Errorf("magic: %w", err)
	}
	size, _, err := uvarint(s[n:], 10, 64)
	if err != nil {
		return Metadata{}, fmt.Errorf("size: %w", err)
	}
	return Metadata{Magic: uint32(magic), Size: size}, nil
}

// Info describes a state image.
type Info struct {
	Path          string `json:"path"`
	ImageSize     int64  `json:"image_size"`
	AllocatedSize int64  `json:"allocated_size"`
	Magic         uint32 `json:"magic"`
	NVSize        uint64 `json:"nv_size"`
}

// Error is a validation failure of an image.
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string { return e.Path + ": " + e.Msg }

// Decode decrypts and validates the first UsedSectors sectors of an image.
func Decode(path string, head []byte, key []byte) ([]byte, Metadata, error) {
	if len(head) < MinImageSize {
		return nil, Metadata{}, &Error{path, fmt.Sprintf("too short for an SVSM state image: %d bytes, need at least %d (33 sectors)", len(head), MinImageSize)}
	}
	c, err := xts.New(key)
	if err != nil {
		return nil, Metadata{}, err
	}
	// The metadata sector tells a wrong key: the NVChip sectors are only
	// decrypted once it has been checked.
	plain := make([]byte, MinImageSize)
	if err := c.DecryptSectors(plain[:SectorSize], head[:SectorSize]); err != nil {
		return nil, Metadata{}, err
	}
	m, err := DecodeMetadata(plain[:SectorSize])
	if err != nil || m.Magic != Magic {
		return nil, Metadata{}, &Error{path, "wrong key or not an SVSM state image (metadata magic mismatch)"}
	}
	if m.Size != NVSize {
		return nil, m, &Error{path, fmt.Sprintf("metadata says the NVChip is %d bytes, not %d: the SVSM would re-manufacture this TPM (image unusable as it is; re-create it with pack or manufacture)", m.Size, NVSize)}
	}
	if err := c.DecryptSectors(plain[SectorSize:], head[SectorSize:MinImageSize]); err != nil {
		return nil, Metadata{}, err
	}
	return plain[SectorSize:], m, nil
}

// Encode returns the encrypted UsedSectors sectors for an NVChip.
func Encode(nv, key []byte) ([]byte, error) {
	if len(nv) != NVSize {
		return nil, fmt.Errorf("NVChip must be exactly %d bytes, got %d", NVSize, len(nv))
	}
	c, err := xts.New(key)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, MinImageSize)
	copy(buf, Metadata{Magic: Magic, Size: NVSize}.Encode())
	copy(buf[SectorSize:], nv)
	if err := c.EncryptSectors(buf, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

func openImage(path string, flag int) (*os.File, os.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, &Error{path, "cannot open state image: " + atomicfile.ErrText(err)}
	}
	if st.IsDir() {
		return nil, nil, &Error{path, "is a directory, not a state image"}
	}
	if !st.Mode().IsRegular() {
		return nil, nil, &Error{path, "is not a regular file"}
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, nil, &Error{path, "cannot open state image: " + atomicfile.ErrText(err)}
	}
	return f, st, nil
}

func readHead(f *os.File, path string) ([]byte, error) {
	head := make([]byte, MinImageSize)
	n, err := io.ReadFull(f, head)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return head[:n], nil
	}
	if err != nil {
		return nil, &Error{path, "read: " + err.Error()}
	}
	return head, nil
}

// Read opens an image and returns its NVChip and facts about it.
func Read(path string, key []byte) ([]byte, Info, error) {
	f, st, err := openImage(path, os.O_RDONLY)
	if err != nil {
		return nil, Info{}, err
	}
	defer f.Close()
	head, err := readHead(f, path)
	if err != nil {
		return nil, Info{}, err
	}
	nv, m, err := Decode(path, head, key)
	if err != nil {
		return nil, Info{}, err
	}
	return nv, info(path, st, m), nil
}

func info(path string, st os.FileInfo, m Metadata) Info {
	i := Info{Path: path, ImageSize: st.Size(), Magic: m.Magic, NVSize: m.Size}
	i.AllocatedSize = atomicfile.Allocated(st)
	return i
}

// Prepare validates a new image of the given size holding nv and returns
// what writes it into an empty file: only the used sectors are written,
// the rest stays a hole.
func Prepare(path string, key, nv []byte, size int64) (func(f *os.File) error, error) {
	if size < MinImageSize {
		return nil, fmt.Errorf("%s: image size %d is below the minimum of %d bytes (33 sectors)", path, size, MinImageSize)
	}
	if size%SectorSize != 0 {
		return nil, fmt.Errorf("%s: image size %d is not a multiple of %d", path, size, SectorSize)
	}
	enc, err := Encode(nv, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return func(f *os.File) error {
		if err := f.Truncate(size); err != nil {
			return err
		}
		_, err := f.WriteAt(enc, 0)
		return err
	}, nil
}

// Create writes a new sparse image of the given size holding nv.
func Create(path string, key, nv []byte, size int64, overwrite bool) error {
	fill, err := Prepare(path, key, nv, size)
	if err != nil {
		return err
	}
	return atomicfile.Create(path, 0o600, overwrite, fill)
}

// Update rewrites an existing image atomically: it locks the image, checks
// that oldKey opens it, passes the NVChip to change (which may return it
// modified, or nil to leave it), and writes the result under newKey (nil:
// oldKey). Data outside the used sectors is carried over extent by extent,
// so holes stay holes and the cost does not depend on the image size. On any
// error the image is left as it was.
func Update(path string, oldKey, newKey []byte, change func(nv []byte) ([]byte, error)) error {
	rw, err := atomicfile.BeginRewrite(path)
	if err != nil {
		return err
	}
	defer rw.Close()
	f := rw.File
	head, err := readHead(f, path)
	if err != nil {
		return err
	}
	nv, _, err := Decode(path, head, oldKey)
	if err != nil {
		return err
	}
	if change != nil {
		out, err := change(nv)
		if err != nil {
			return err
		}
		if out != nil {
			nv = out
		}
	}
	if newKey == nil {
		newKey = oldKey
	}
	enc, err := Encode(nv, newKey)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	size := rw.Info.Size()
	return rw.Commit(func(tmp *os.File) error {
		if err := tmp.Truncate(size); err != nil {
			return err
		}
		if err := copyExtents(tmp, f, MinImageSize, size); err != nil {
			return err
		}
		_, err = tmp.WriteAt(enc, 0)
		return err
	})
}

// copyExtents copies the data regions of src in [from, end) to dst at the
// same offsets, skipping holes.
func copyExtents(dst, src *os.File, from, end int64) error {
	fd := int(src.Fd())
	buf := make([]byte, 1<<20)
	off := from
	for off < end {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				return nil // no more data
			}
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				data = off // file system without hole reporting: copy everything
			} else {
				return err
			}
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = end
		}
		if hole > end {
			hole = end
		}
		for p := data; p < hole; {
			n := int64(len(buf))
			if hole-p < n {
				n = hole - p
			}
			m, err := src.ReadAt(buf[:n], p)
			if m > 0 {
				if !allZero(buf[:m]) {
					if _, err := dst.WriteAt(buf[:m], p); err != nil {
						return err
					}
				}
				p += int64(m)
			}
			if err != nil && err != io.EOF {
				return err
			}
			if m == 0 {
				break
			}
		}
		off = hole
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
