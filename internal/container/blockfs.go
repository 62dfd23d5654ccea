package container

import (
	"os"

	"github.com/vtpm-mfg/vtpm-mfg/internal/blockfs"
)

// blockFS is the proof-of-concept SVSM's container (package blockfs).
type blockFS struct{}

func init() { register(blockFS{}) }

func (blockFS) Name() string { return "blockfs" }

func (blockFS) Detect(head []byte) bool { return true }

func (blockFS) Read(path string, key []byte) ([]byte, *Info, error) {
	nv, si, err := blockfs.Read(path, key)
	if err != nil {
		return nil, nil, err
	}
	return nv, &Info{Path: si.Path, Container: "blockfs", ImageSize: si.ImageSize, AllocatedSize: si.AllocatedSize, Magic: si.Magic, NVSize: si.NVSize}, nil
}

func (blockFS) Prepare(path string, key, nvchip []byte, o CreateOptions) (func(*os.File) error, error) {
	size := o.Size
	if size == 0 {
		size = blockfs.DefaultImageSize
	}
	return blockfs.Prepare(path, key, nvchip, size)
}

func (blockFS) Update(path string, oldKey, newKey []byte, change func([]byte) ([]byte, error)) error {
	return blockfs.Update(path, oldKey, newKey, change)
}

func (blockFS) MinSize(CreateOptions) int64 { return blockfs.MinImageSize }
