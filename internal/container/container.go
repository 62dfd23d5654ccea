// Package container is the one interface through which the pipeline
// reads and writes the SVSM's encrypted state images: it names the
// formats (BlockFS of the proof-of-concept SVSM, CocoonFS of upstream
// SVSM), tells them apart, and hands out the vTPM's NVChip while keeping
// everything else in the image as it is.
package container

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/vtpm-mfg/vtpm-mfg/internal/atomicfile"
	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
)

// Format is a state image container.
type Format interface {
	// Name is the container's name on the command line.
	Name() string
	// Detect tells whether the first bytes of an image are this format's.
	Detect(head []byte) bool
	// Read opens the image with key and returns the NVChip and facts.
	Read(path string, key []byte) ([]byte, *Info, error)
	// Prepare checks a new image at path holding nvchip and returns what
	// writes it into an empty file (Create, or a batch of outputs).
	Prepare(path string, key, nvchip []byte, o CreateOptions) (func(f *os.File) error, error)
	// Update rewrites an existing image atomically under its lock: oldKey
	// must open it; change (if not nil) may return a new NVChip; the image
	// is written under newKey (nil: oldKey), everything else kept. The
	// warnings are problems of the image written that the rewrite keeps
	// (such as too little free space for the SVSM).
	Update(path string, oldKey, newKey []byte, change func(nvchip []byte) ([]byte, error)) (warnings []string, err error)
	// MinSize and MaxSize bound the images Create accepts for o.
	MinSize(o CreateOptions) int64
	MaxSize(o CreateOptions) int64
	// CheckSize tells why a new image of size bytes cannot be made (too
	// small, too large, or not a whole number of the format's blocks).
	CheckSize(size int64, o CreateOptions) error
}

// What to do about an image that does not open.
const (
	wrongKeyRemedy = "check that the key is this image's (key kbs prints a key's fingerprint, inspect the fingerprint of the key that opens an image), or restore the image from a backup"
	damagedRemedy  = "the image is damaged or truncated: restore it from a backup, or re-manufacture it"
)

// MaxImageSize is the largest image size accepted at all (1 TiB).
const MaxImageSize = 1 << 40

// checkSize applies a format's bounds and block size to size.
func checkSize(f Format, size int64, o CreateOptions, block int64) error {
	switch min, max := f.MinSize(o), f.MaxSize(o); {
	case size < min:
		return fmt.Errorf("%d bytes is below the minimum of %d bytes for a %s vTPM image; give at least %d", size, min, f.Name(), min)
	case size > max:
		return fmt.Errorf("%d bytes is above the largest %s image this tool writes (%d bytes); give at most %d", size, f.Name(), max, max)
	case size%block != 0:
		return fmt.Errorf("%d bytes is not a whole number of %d-byte blocks for a %s image; give a multiple of %d, e.g. %d", size, block, f.Name(), block, size/block*block)
	}
	return nil
}

// CreateOptions control a new image.
type CreateOptions struct {
	Size      int64 // bytes; 0: the format's default
	Overwrite bool
	// Strength selects the CocoonFS algorithms: 128 (AES-128, SHA-256),
	// 192 or 256. 0: 128.
	Strength int
	// ZeroFree leaves free CocoonFS space zero (sparse) instead of random.
	ZeroFree bool
}

// Info describes an opened state image.
type Info struct {
	Path          string `json:"path"`
	Container     string `json:"container"`
	ImageSize     int64  `json:"image_size"`
	AllocatedSize int64  `json:"allocated_size"`
	// KeyFingerprint identifies the key that opened the image.
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	// BlockFS
	Magic  uint32 `json:"magic,omitempty"`
	NVSize uint64 `json:"nv_size,omitempty"`
	// CocoonFS
	CocoonFS *CocoonInfo `json:"cocoonfs,omitempty"`
	// Findings are container-level problems that make the SVSM discard
	// the TPM (e.g. a missing "manufactured" marker).
	Findings []string `json:"findings,omitempty"`
}

// Create writes a new image (mode 0600) at path holding nvchip.
func Create(f Format, path string, key, nvchip []byte, o CreateOptions) error {
	if err := atomicfile.Check(path, o.Overwrite); err != nil {
		return err
	}
	fill, err := f.Prepare(path, key, nvchip, o)
	if err != nil {
		return err
	}
	return atomicfile.Create(path, 0o600, o.Overwrite, fill)
}

var formats = map[string]Format{}

func register(f Format) { formats[f.Name()] = f }

// Names lists the known containers.
func Names() []string {
	var n []string
	for k := range formats {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Get returns a container by name.
func Get(name string) (Format, error) {
	if f, ok := formats[name]; ok {
		return f, nil
	}
	return nil, fmt.Errorf("unknown container %q (known: %v)", name, Names())
}

// DetectFile returns the container of an existing image: CocoonFS images
// start with a plaintext magic; anything else is taken as BlockFS, which
// is encrypted from its first byte.
func DetectFile(path string) (Format, error) {
	f, _, err := input.Open(path, "state image")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	for _, name := range Names() {
		if name != "blockfs" && formats[name].Detect(head[:n]) {
			return formats[name], nil
		}
	}
	return formats["blockfs"], nil
}

// ParseSize reads an image size: bytes, or a number with a binary unit
// (K, M, G, T, or KiB, MiB, GiB, TiB; B for bytes). Whether a container
// takes the size is CheckSize's to say.
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}, {"K", 10}, {"M", 20}, {"G", 30}, {"T", 40}, {"B", 0}}
	t := strings.TrimSpace(s)
	shift := uint(0)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, shift = strings.TrimSuffix(t, u.suffix), u.shift
			break
		}
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil || t == "" {
		return 0, fmt.Errorf("%q is not a size; give bytes, or a number with K, M, G, T or KiB, MiB, GiB, TiB (e.g. 8M)", s)
	}
	if n == 0 || n > MaxImageSize>>shift {
		return 0, fmt.Errorf("%q is out of range; give 1 byte to 1 TiB", s)
	}
	return int64(n << shift), nil
}
