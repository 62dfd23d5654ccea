package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Rewrite replaces the content of an existing file the way a VM host
// needs it: the file behind a symbolic link is rewritten and the link
// stays; owner, group, mode and extended attributes (ACLs, SELinux
// labels, user.*) carry over; a file with other hard links, or one that
// another process holds a POSIX or OFD lock on (QEMU locks the images it
// has open), is refused; while rewriting, the file is locked both with
// flock (other vtpm-mfg processes) and with an OFD write lock (QEMU), and
// stale temporary files of earlier, killed runs are removed.
type Rewrite struct {
	File *os.File    // the current file, open for reading
	Info fs.FileInfo // its state when locked
	path string      // as the user named it
	real string      // after following symbolic links
}

// ErrInUse reports a file another process holds a lock on.
var ErrInUse = errors.New("in use by a running VM or another program; stop it first")

// ErrText is an error's message without the path a *PathError or
// *LinkError adds (callers name the user's file themselves).
func ErrText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err.Error()
	}
	return err.Error()
}

// Remedy says what to do about a failed write or open: "" when the error
// says nothing more specific than itself.
func Remedy(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "free space on its file system (or raise the quota) and run the command again"
	case errors.Is(err, syscall.EROFS):
		return "the file system is read-only: work on a copy elsewhere, or remount it read-write"
	case errors.Is(err, fs.ErrPermission):
		return "run as a user who may write there, or fix the permissions"
	case errors.Is(err, syscall.EIO):
		return "the disk reported an I/O error: check it, and restore from a backup if needed"
	}
	return "check the path, the disk and the permissions, and run the command again"
}

// tmpPrefix is the name prefix of the temporary files for target.
func tmpPrefix(target string) string { return "." + filepath.Base(target) + ".tmp-" }

// BeginRewrite opens and locks path for a rewrite.
func BeginRewrite(path string) (*Rewrite, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot open: %s; %s", path, ErrText(err), Remedy(err))
	}
	st, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot open: %s; %s", path, ErrText(err), Remedy(err))
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not a state image; pass the image file", path)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: is not a regular file; pass the state image file", path)
	}
	f, err := os.OpenFile(real, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot open: %s; %s", path, ErrText(err), Remedy(err))
	}
	r := &Rewrite{File: f, path: path, real: real}
	if err := r.lock(); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

func (r *Rewrite) lock() error {
	f, path := r.File, r.path
	if err := Lock(f); err != nil {
		return fmt.Errorf("%s: locked by another vtpm-mfg process; try again when it has finished", path)
	}
	// Any POSIX or OFD lock of another process (QEMU takes OFD locks).
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err == nil && lk.Type != unix.F_UNLCK {
		return fmt.Errorf("%s: %w", path, ErrInUse)
	}
	lk = unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return fmt.Errorf("%s: %w", path, ErrInUse)
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOLCK) {
			return fmt.Errorf("%s: lock: %s", path, ErrText(err))
		}
	}
	held, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %s", path, ErrText(err))
	}
	// Another process may have replaced the file between open and lock.
	if cur, err := os.Stat(r.real); err != nil || !os.SameFile(cur, held) {
		return fmt.Errorf("%s: was replaced by another process while this one waited; run the command again", path)
	}
	if sys, ok := held.Sys().(*syscall.Stat_t); ok && sys.Nlink > 1 {
		return fmt.Errorf("%s: has %d hard links; refusing to rewrite it, because the other names would keep the old content (copy it to a file of its own first)", path, sys.Nlink)
	}
	r.Info = held
	r.removeStale()
	return nil
}

// removeStale deletes temporary files that killed runs left for this
// file: with the lock held, no other run is writing one.
func (r *Rewrite) removeStale() {
	dir, prefix := filepath.Dir(r.real), tmpPrefix(r.real)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) && e.Type().IsRegular() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Close releases the file and its locks.
func (r *Rewrite) Close() error { return r.File.Close() }

// Commit writes the new content with fill into a temporary file next to
// the real file, gives it the original's owner, group, mode and extended
// attributes, syncs it, renames it over the real file and syncs the
// directory. On any error the original is unchanged and the temporary
// file is gone; errors name the user's file.
func (r *Rewrite) Commit(fill func(tmp *os.File) error) (err error) {
	path := r.path
	unchanged := func(what string, e error) error {
		return fmt.Errorf("%s: %s %s; %s is unchanged; %s", path, ErrText(e), what, path, Remedy(e))
	}
	dir := filepath.Dir(r.real)
	tmp, err := os.CreateTemp(dir, tmpPrefix(r.real)+"*")
	if err != nil {
		return unchanged("while creating the new image in "+dir, err)
	}
	name := tmp.Name()
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		if err != nil {
			os.Remove(name)
		}
	}()
	if err = fill(tmp); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EIO) {
			return unchanged("while writing the new image", err)
		}
		return err
	}
	if err = copyMetadata(r.File, tmp, r.Info); err != nil {
		return fmt.Errorf("%s: cannot carry over %v; %s is unchanged", path, err, path)
	}
	if err = tmp.Sync(); err != nil {
		return unchanged("while syncing the new image", err)
	}
	if err = tmp.Close(); err != nil {
		tmp = nil
		return unchanged("while closing the new image", err)
	}
	tmp = nil
	if err = os.Rename(name, r.real); err != nil {
		return unchanged("while renaming the new image into place", err)
	}
	return SyncDir(dir)
}

// copyMetadata gives dst the owner, group, mode and extended attributes
// of src.
func copyMetadata(src, dst *os.File, fi fs.FileInfo) error {
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := dst.Chown(int(sys.Uid), int(sys.Gid)); err != nil {
			return fmt.Errorf("its owner %d:%d (%s; run as that user or as root)", sys.Uid, sys.Gid, ErrText(err))
		}
	}
	if err := dst.Chmod(fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)); err != nil {
		return fmt.Errorf("its mode (%s)", ErrText(err))
	}
	names, err := listXattrs(int(src.Fd()))
	if err != nil {
		return fmt.Errorf("its extended attributes (%s)", ErrText(err))
	}
	for _, n := range names {
		v, err := getXattr(int(src.Fd()), n)
		if err != nil {
			return fmt.Errorf("extended attribute %s (%s)", n, ErrText(err))
		}
		if err := unix.Fsetxattr(int(dst.Fd()), n, v, 0); err != nil {
			return fmt.Errorf("extended attribute %s (%s)", n, ErrText(err))
		}
	}
	return nil
}

func listXattrs(fd int) ([]string, error) {
	sz, err := unix.Flistxattr(fd, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Flistxattr(fd, buf)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range strings.Split(string(buf[:sz]), "\x00") {
		if n != "" {
			names = append(names, n)
		}
	}
	return names, nil
}

func getXattr(fd int, name string) ([]byte, error) {
	sz, err := unix.Fgetxattr(fd, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Fgetxattr(fd, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:sz], nil
}
