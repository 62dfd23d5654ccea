package container

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/blockfs"
	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
)

// blockFS is the proof-of-concept SVSM's container (format: package
// blockfs): a sparse image of which only the first 33 sectors are used.
type blockFS struct{}

func init() { register(blockFS{}) }

func (blockFS) Name() string { return "blockfs" }

func (blockFS) Detect(head []byte) bool { return true }

// readHead reads the sectors in use (or as much of them as there is).
func readHead(f *os.File, path string) ([]byte, error) {
	head := make([]byte, blockfs.MinImageSize)
	n, err := io.ReadFull(f, head)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return head[:n], nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: cannot read the state image: %s; check the disk and the file", path, atomicfile.ErrText(err))
	}
	return head, nil
}

func (blockFS) Read(path string, key []byte) ([]byte, *Info, error) {
	f, st, err := input.Open(path, "state image")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	head, err := readHead(f, path)
	if err != nil {
		return nil, nil, err
	}
	nv, m, err := blockfs.Decode(path, head, key)
	if err != nil {
		return nil, nil, err
	}
	return nv, &Info{Path: path, Container: "blockfs", ImageSize: st.Size(), AllocatedSize: atomicfile.Allocated(st), Magic: m.Magic, NVSize: m.Size}, nil
}

// Prepare validates a new image holding nvchip and returns what writes it
// into an empty file: only the used sectors are written, the rest stays a
// hole.
func (b blockFS) Prepare(path string, key, nvchip []byte, o CreateOptions) (func(*os.File) error, error) {
	size := o.Size
	if size == 0 {
		size = blockfs.DefaultImageSize
	}
	if err := b.CheckSize(size, o); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	enc, err := blockfs.Encode(nvchip, key)
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

// Update rewrites an existing image atomically: it locks the image, checks
// that oldKey opens it, passes the NVChip to change (which may return it
// modified, or nil to leave it), and writes the result under newKey (nil:
// oldKey). Data outside the used sectors is carried over extent by extent,
// so holes stay holes and the cost does not depend on the image size. On any
// error the image is left as it was.
func (blockFS) Update(path string, oldKey, newKey []byte, change func([]byte) ([]byte, error)) ([]string, error) {
	rw, err := atomicfile.BeginRewrite(path)
	if err != nil {
		return nil, err
	}
	defer rw.Close()
	f := rw.File
	head, err := readHead(f, path)
	if err != nil {
		return nil, err
	}
	nv, _, err := blockfs.Decode(path, head, oldKey)
	if err != nil {
		return nil, err
	}
	if change != nil {
		out, err := change(nv)
		if err != nil {
			return nil, err
		}
		if out != nil {
			nv = out
		}
	}
	if newKey == nil {
		newKey = oldKey
	}
	enc, err := blockfs.Encode(nv, newKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	size := rw.Info.Size()
	return nil, rw.Commit(func(tmp *os.File) error {
		if err := tmp.Truncate(size); err != nil {
			return err
		}
		if err := copyExtents(tmp, f, blockfs.MinImageSize, size); err != nil {
			return err
		}
		_, err = tmp.WriteAt(enc, 0)
		return err
	})
}

func (blockFS) MinSize(CreateOptions) int64 { return blockfs.MinImageSize }

// MaxBlockFSSize bounds new BlockFS images. They are sparse and only 33
// sectors are written, in constant memory, but the image's SHA-256 in the
// manifest reads every byte (about 3 s per GiB here); the SVSM needs
// 16896 bytes and the demo makes 16 MiB.
const MaxBlockFSSize = 1 << 30

func (blockFS) MaxSize(CreateOptions) int64 { return MaxBlockFSSize }

func (b blockFS) CheckSize(size int64, o CreateOptions) error {
	return checkSize(b, size, o, blockfs.SectorSize)
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
		hole = min(hole, end)
		for p := data; p < hole; {
			n := min(int64(len(buf)), hole-p)
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
