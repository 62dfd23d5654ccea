package input

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every kind of path that is not a regular file is refused at once, with
// the path, what it is and what to do; none of them blocks.
func TestRefusesWithoutBlocking(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	os.Symlink(loop, loop)
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cases := []struct{ path, want string }{
		{fifo, "is a FIFO (named pipe), not a key file; pass a regular file"},
		{"/dev/null", "is a character device, not a key file; pass a regular file"},
		{sock, "is a socket, not a key file; pass a regular file"},
		{dir, "is a directory, not a key file; pass a regular file"},
		{loop, "a loop of symbolic links; pass a regular file"},
		{filepath.Join(dir, "missing"), "no such key file; check the path"},
		{filepath.Join(dir, "fifo", "x"), "not a directory"},
	}
	for _, c := range cases {
		done := make(chan error, 1)
		go func() { _, err := ReadFile(c.path, "key file", 4096); done <- err }()
		select {
		case err := <-done:
			var ie *Error
			if err == nil || !errors.As(err, &ie) || !strings.HasPrefix(err.Error(), c.path+": ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: got %v, want %q", c.path, err, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: blocked", c.path)
		}
	}
	// A FIFO with a writer is refused the same way.
	w, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := ReadFile(fifo, "key file", 4096); err == nil || !strings.Contains(err.Error(), "FIFO") {
		t.Errorf("FIFO with a writer: %v", err)
	}
}

func TestReadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("12345"), 0o600)
	if b, err := ReadFile(p, "key file", 5); err != nil || string(b) != "12345" {
		t.Fatalf("%q %v", b, err)
	}
	if _, err := ReadFile(p, "key file", 4); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("limit: %v", err)
	}
	// A symbolic link to a regular file is followed.
	l := p + ".link"
	os.Symlink(p, l)
	if b, err := ReadFile(l, "key file", 5); err != nil || string(b) != "12345" {
		t.Fatalf("link: %q %v", b, err)
	}
	// The file is blocking again after the check.
	f, _, err := Open(p, "key file")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fl, _ := fcntlFlags(f); fl&syscall.O_NONBLOCK != 0 {
		t.Error("file left non-blocking")
	}
}

func fcntlFlags(f *os.File) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), syscall.F_GETFL, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
