package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func content(s string) func(*os.File) error {
	return func(f *os.File) error { _, err := f.WriteString(s); return err }
}

func TestCreateAndReplace(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Create(p, 0o600, false, content("one")); err != nil {
		t.Fatal(err)
	}
	if err := Create(p, 0o600, false, content("two")); !errors.Is(err, ErrExists) {
		t.Fatalf("overwrite without force: %v", err)
	}
	os.Chmod(p, 0o640)
	if err := rewrite(p, content("three")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if string(b) != "three" || st.Mode().Perm() != 0o640 {
		t.Fatalf("%q %v", b, st.Mode())
	}
	// a failing fill leaves the target and no temporary file
	if err := rewrite(p, func(*os.File) error { return errors.New("boom") }); err == nil {
		t.Fatal("no error")
	}
	if b, _ := os.ReadFile(p); string(b) != "three" {
		t.Fatal("target changed")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestLockIsExclusive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	os.WriteFile(p, []byte("x"), 0o600)
	a, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer a.Close()
	b, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer b.Close()
	if err := Lock(a); err != nil {
		t.Fatal(err)
	}
	if err := Lock(b); err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second lock: %v", err)
	}
}

func rewrite(path string, fill func(*os.File) error) error {
	r, err := BeginRewrite(path)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Commit(fill)
}

// A symlinked image: the real file is rewritten, the link stays a link.
func TestRewriteFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "store"), 0o755)
	real := filepath.Join(dir, "store", "vm1.img")
	os.WriteFile(real, []byte("old"), 0o600)
	link := filepath.Join(dir, "vm1.img")
	if err := os.Symlink("store/vm1.img", link); err != nil {
		t.Fatal(err)
	}
	if err := rewrite(link, content("new")); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Lstat(link); st.Mode()&os.ModeSymlink == 0 {
		t.Error("the link was replaced by a file")
	}
	if b, _ := os.ReadFile(real); string(b) != "new" {
		t.Errorf("real image holds %q", b)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "store")); len(ents) != 1 {
		t.Errorf("temporaries left: %v", ents)
	}
}

func TestRewriteRefusesHardLinks(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.img")
	os.WriteFile(p, []byte("old"), 0o600)
	os.Link(p, filepath.Join(dir, "b.img"))
	err := rewrite(p, content("new"))
	if err == nil || !strings.Contains(err.Error(), "hard links") || !strings.Contains(err.Error(), p) {
		t.Fatalf("hard link: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Error("changed")
	}
}

// Owner, group, mode and extended attributes carry over (as root, the
// file is given to another user first).
func TestRewriteKeepsOwnerModeXattrs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.img")
	os.WriteFile(p, []byte("old"), 0o600)
	os.Chmod(p, 0o640)
	wantUID, wantGID := os.Getuid(), os.Getgid()
	if os.Getuid() == 0 {
		wantUID, wantGID = 64055, 64056 // e.g. libvirt-qemu:kvm
		if err := os.Chown(p, wantUID, wantGID); err != nil {
			t.Fatal(err)
		}
	}
	xattr := unix.Setxattr(p, "user.vtpm-mfg-test", []byte("label"), 0) == nil
	if err := rewrite(p, content("new")); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	sys := st.Sys().(*syscall.Stat_t)
	if int(sys.Uid) != wantUID || int(sys.Gid) != wantGID || st.Mode().Perm() != 0o640 {
		t.Errorf("owner %d:%d mode %v", sys.Uid, sys.Gid, st.Mode())
	}
	if xattr {
		buf := make([]byte, 64)
		n, err := unix.Getxattr(p, "user.vtpm-mfg-test", buf)
		if err != nil || string(buf[:n]) != "label" {
			t.Errorf("xattr lost: %v", err)
		}
	} else {
		t.Log("file system without user xattrs: xattr carry-over not checked")
	}
}

// QEMU holds OFD locks on the images it runs.
func TestRewriteRefusesLockedImage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.img")
	os.WriteFile(p, []byte("old"), 0o600)
	q, _ := os.Open(p)
	defer q.Close()
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 100, Len: 1}
	if err := unix.FcntlFlock(q.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Skipf("no OFD locks here: %v", err)
	}
	err := rewrite(p, content("new"))
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), p) {
		t.Fatalf("locked image: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Error("changed")
	}
	// While a rewrite holds the image, a VM cannot take its lock.
	q.Close()
	r, err := BeginRewrite(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer v.Close()
	lk = unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 100, Len: 1}
	if err := unix.FcntlFlock(v.Fd(), unix.F_OFD_SETLK, &lk); err == nil {
		t.Error("a VM could lock the image during the rewrite")
	}
}

// A killed run leaves a temporary file; the next rewrite removes it.
func TestRewriteRemovesStaleTemporaries(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.img")
	os.WriteFile(p, []byte("old"), 0o600)
	stale := filepath.Join(dir, ".s.img.tmp-123456")
	other := filepath.Join(dir, ".t.img.tmp-1")
	os.WriteFile(stale, []byte("half"), 0o600)
	os.WriteFile(other, []byte("someone else's"), 0o600)
	if err := rewrite(p, content("new")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("stale temporary survived")
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("another image's temporary was removed")
	}
}

// A write error names the user's file, never the temporary one.
func TestRewriteErrorNamesUserFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.img")
	os.WriteFile(p, []byte("old"), 0o600)
	err := rewrite(p, func(f *os.File) error {
		_, err := f.WriteAt([]byte("x"), -1)
		return err
	})
	if err == nil || strings.Contains(err.Error(), ".tmp-") || !strings.Contains(err.Error(), p+" is unchanged") {
		t.Fatalf("error: %v", err)
	}
}

// A batch is all or nothing: when one file cannot be written, the others
// do not appear either.
func TestBatchAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	var b Batch
	if err := b.MkdirAll(filepath.Join(dir, "certs", "sub")); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(filepath.Join(dir, "s.img"), 0o600, false, content("image")); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(filepath.Join(dir, "certs", "sub", "a.pem"), 0o644, false, content("cert")); err != nil {
		t.Fatal(err)
	}
	// The third output appears before the commit.
	if err := b.Add(filepath.Join(dir, "late"), 0o644, false, content("x")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "late"), []byte("someone's"), 0o644)
	if err := b.Commit(); !errors.Is(err, ErrExists) {
		t.Fatalf("commit: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "late" {
		t.Fatalf("left behind: %v", ents)
	}
	var ok Batch
	ok.Add(filepath.Join(dir, "s.img"), 0o600, false, content("image"))
	if err := ok.Commit(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "s.img")); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
}

// --force replaces regular files only, never a device, a FIFO or a
// directory.
func TestCreateNeverReplacesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	for _, p := range []string{fifo, filepath.Join(dir, "d")} {
		if err := Create(p, 0o600, true, content("x")); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("%s: %v", p, err)
		}
	}
	if st, _ := os.Lstat(fifo); st.Mode()&os.ModeNamedPipe == 0 {
		t.Error("the FIFO was replaced")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("left behind: %v", ents)
	}
}
