// Package atomicfile writes files so that a reader sees either the old or the
// new content, never a mix: the new content goes to a temporary file in the
// same directory, is synced, renamed (or linked) into place, and the
// directory is synced. On any error the target is left untouched.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrExists is returned by Create when the target exists and overwriting
// was not allowed.
var ErrExists = errors.New("file exists")

// Create writes a new file at path with the given mode. fill writes the
// content into the temporary file. Unless overwrite is set, Create fails with
// ErrExists if path exists, and never replaces a file that appears
// concurrently (the temporary file is hard-linked into place).
func Create(path string, mode fs.FileMode, overwrite bool, fill func(f *os.File) error) error {
	var b Batch
	if err := b.Add(path, mode, overwrite, fill); err != nil {
		return err
	}
	return b.Commit()
}

// SyncDir makes a directory's entries (a rename into it) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%s: sync directory: %w", dir, err)
	}
	return nil
}

// Lock takes an exclusive advisory lock on an open file without waiting.
func Lock(f *os.File) error {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%s: locked by another process; try again when it has finished", f.Name())
		}
		return fmt.Errorf("%s: lock: %w", f.Name(), err)
	}
	return nil
}

// Allocated returns the bytes a file occupies on disk (st_blocks), or -1
// where the system does not say.
func Allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return -1
}

// WriteSecret writes a small file holding secret material with mode 0600.
func WriteSecret(path string, data []byte, overwrite bool) error {
	return Create(path, 0o600, overwrite, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}
