package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
)

// Batch writes several new files all or nothing: each is staged in a
// temporary file next to its target and synced; Commit then puts them in
// place together. If any step fails, none of the new files remain (files
// replaced with overwrite stay replaced), nor any temporary file or
// directory the batch created.
type Batch struct {
	staged []staged
	dirs   []string // created by the batch, deepest last
}

type staged struct {
	tmp, target string
	overwrite   bool
}

// MkdirAll creates dir (and parents) for the batch's files.
func (b *Batch) MkdirAll(dir string) error {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append([]string{d}, missing...)
		if filepath.Dir(d) == d {
			break
		}
	}
	for _, d := range missing {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %s", d, ErrText(err))
		}
		b.dirs = append(b.dirs, d)
	}
	return nil
}

// Check fails if path exists and may not be overwritten: call it for
// every output before any work, so that nothing is written in vain.
func Check(path string, overwrite bool) error {
	st, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	if !overwrite {
		return fmt.Errorf("%s: %w (use --force to replace it)", path, ErrExists)
	}
	// Only regular files are replaced: never a device (/dev/null), FIFO,
	// socket, directory or the link itself.
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: is not a regular file (%s); refusing to replace it even with --force", path, input.Kind(st.Mode()))
	}
	return nil
}

// Add stages a new file.
func (b *Batch) Add(path string, mode fs.FileMode, overwrite bool, fill func(f *os.File) error) (err error) {
	if err := Check(path, overwrite); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tmpPrefix(path)+"*")
	if err != nil {
		return fmt.Errorf("%s: cannot create a file in %s: %s; %s", path, dir, ErrText(err), Remedy(err))
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(mode); err != nil {
		return fmt.Errorf("%s: %s", path, ErrText(err))
	}
	if err = fill(tmp); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s: %s while writing it; nothing was written; %s", path, ErrText(err), Remedy(err))
		}
		return err
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("%s: %s while syncing it; nothing was written; %s", path, ErrText(err), Remedy(err))
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("%s: %s; nothing was written; %s", path, ErrText(err), Remedy(err))
	}
	b.staged = append(b.staged, staged{tmp: tmp.Name(), target: path, overwrite: overwrite})
	return nil
}

// Commit puts every staged file in place.
func (b *Batch) Commit() error {
	var placed []string
	for i, s := range b.staged {
		var err error
		if s.overwrite {
			err = os.Rename(s.tmp, s.target)
		} else if err = os.Link(s.tmp, s.target); err == nil {
			os.Remove(s.tmp)
		}
		if err != nil {
			for _, p := range placed {
				os.Remove(p)
			}
			b.staged = b.staged[i:]
			b.Abort()
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w (it appeared meanwhile; nothing was written)", s.target, ErrExists)
			}
			return fmt.Errorf("%s: %s; nothing was written; %s", s.target, ErrText(err), Remedy(err))
		}
		if !s.overwrite {
			placed = append(placed, s.target)
		}
	}
	seen := map[string]bool{}
	for _, s := range b.staged {
		d := filepath.Dir(s.target)
		if !seen[d] {
			seen[d] = true
			if err := SyncDir(d); err != nil {
				return err
			}
		}
	}
	b.staged, b.dirs = nil, nil
	return nil
}

// Abort removes what the batch staged or created.
func (b *Batch) Abort() {
	for _, s := range b.staged {
		os.Remove(s.tmp)
	}
	for i := len(b.dirs) - 1; i >= 0; i-- {
		os.Remove(b.dirs[i]) // only if empty
	}
	b.staged, b.dirs = nil, nil
}
