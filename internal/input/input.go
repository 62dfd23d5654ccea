// Package input opens the files a user names as inputs (state images,
// keys, certificates, NVChips, manifests) without ever blocking: a FIFO,
// a device, a socket or a directory is refused before a byte is read, and
// every error names the user's path and says what to do.
package input

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Error is a refused input: Path is the user's path, Msg what is wrong
// and what to do.
type Error struct {
	Path string
	What string // "state image", "key file", ...
	Msg  string
	Err  error // the underlying error, if any
}

func (e *Error) Error() string { return e.Path + ": " + e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Kind names a file type that is not a regular file ("a FIFO (named
// pipe)", "a directory", ...).
func Kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeDir != 0:
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "not a regular file"
}

func notRegular(path, what string, m fs.FileMode) error {
	return &Error{Path: path, What: what, Msg: fmt.Sprintf("is %s, not %s %s; pass a regular file", Kind(m), article(what), what)}
}

// article is "a" or "an" for what.
func article(what string) string {
	if strings.IndexByte("aeiouAEIOU", what[0]) >= 0 || strings.HasPrefix(what, "NV") {
		return "an"
	}
	return "a"
}

// openError explains why path could not be opened.
func openError(path, what string, err error) error {
	var msg string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		msg = fmt.Sprintf("no such %s; check the path", what)
	case errors.Is(err, syscall.ELOOP):
		msg = fmt.Sprintf("cannot open the %s: a loop of symbolic links; pass a regular file", what)
	case errors.Is(err, fs.ErrPermission):
		msg = fmt.Sprintf("cannot open the %s: permission denied; run as a user who may read it", what)
	case errors.Is(err, syscall.ENOTDIR):
		msg = fmt.Sprintf("cannot open the %s: a part of the path is not a directory; check the path", what)
	default:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		msg = fmt.Sprintf("cannot open the %s: %v; pass a readable regular file", what, err)
	}
	return &Error{Path: path, What: what, Msg: msg, Err: err}
}

// Open opens path for reading if it is a regular file (symbolic links are
// followed). The open itself cannot block: it is made non-blocking, and
// the file type is checked on the open file before it is used.
func Open(path, what string) (*os.File, os.FileInfo, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		// A socket cannot be opened at all: say what it is.
		if st, serr := os.Stat(path); serr == nil && !st.Mode().IsRegular() {
			return nil, nil, notRegular(path, what, st.Mode())
		}
		return nil, nil, openError(path, what, &fs.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, openError(path, what, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, notRegular(path, what, st.Mode())
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, nil, openError(path, what, err)
	}
	return f, st, nil
}

// Check tells whether path can be opened as an input, without reading it
// (for paths another library opens by name).
func Check(path, what string) error {
	f, _, err := Open(path, what)
	if err != nil {
		return err
	}
	return f.Close()
}

// ReadFile reads a regular file of at most max bytes.
func ReadFile(path, what string, max int64) ([]byte, error) {
	f, st, err := Open(path, what)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st.Size() > max {
		return nil, &Error{Path: path, What: what, Msg: fmt.Sprintf("%d bytes is too large for a %s (at most %d); pass the right file", st.Size(), what, max)}
	}
	// Read at most max+1 bytes: the file may grow while it is read.
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &Error{Path: path, What: what, Msg: fmt.Sprintf("cannot read the %s: %v; check the disk and the file", what, err), Err: err}
	}
	if int64(len(data)) > max {
		return nil, &Error{Path: path, What: what, Msg: fmt.Sprintf("grew beyond %d bytes while it was read; pass a file nothing else is writing", max)}
	}
	return data, nil
}
