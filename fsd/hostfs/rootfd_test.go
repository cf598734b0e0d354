package hostfs

import (
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// pointsAt reports whether fd is open and refers to the inode st describes.
func pointsAt(fd int, st unix.Stat_t) bool {
	var got unix.Stat_t
	return unix.Fstat(fd, &got) == nil && got.Dev == st.Dev && got.Ino == st.Ino
}

// TestWithRootFD proves that New serves the directory the given fd refers
// to, not the path (which only names the export), and that the FS owns the
// fd: it stays open while a File is attached and is closed once the FS and
// its last File are gone.
func TestWithRootFD(t *testing.T) {
	tr := newTree(t)
	fd, err := unix.Open(tr.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	rootSt := lstatT(t, tr.root)
	// A path that does not exist: New must not open it.
	fs, err := New(filepath.Join(tr.base, "no-such-export"), WithRootFD(fd))
	if err != nil {
		unix.Close(fd)
		t.Fatalf("New with a root fd: %v", err)
	}
	root, err := fs.Attach()
	must(t, err)
	_, f, err := root.Walk([]string{"file.txt"})
	must(t, err)
	_, _, err = f.Open(p9.ReadOnly)
	must(t, err)
	buf := make([]byte, 16)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "hello" {
		t.Errorf("file.txt through the root fd: %q, want hello", got)
	}
	must(t, f.Close())

	must(t, fs.Close())
	if !pointsAt(fd, rootSt) {
		t.Fatal("the root fd was closed while a File was still attached")
	}
	must(t, root.Close())
	if pointsAt(fd, rootSt) {
		t.Error("the root fd is still open after the FS and its last File were closed")
	}
}

// TestWithRootFDRefused proves that New refuses a root fd that cannot be
// an export root, and closes it (it owns the fd once given).
func TestWithRootFDRefused(t *testing.T) {
	tr := newTree(t)
	tests := []struct {
		name string
		open func(t *testing.T) (int, unix.Stat_t)
		want error
	}{{
		// A regular file is no export root: ENOTDIR, fd closed.
		name: "regular file",
		open: func(t *testing.T) (int, unix.Stat_t) {
			fd, err := unix.Open(tr.path("file.txt"), unix.O_PATH|unix.O_CLOEXEC, 0)
			must(t, err)
			return fd, lstatT(t, tr.path("file.txt"))
		},
		want: unix.ENOTDIR,
	}, {
		// A negative fd (a failed open passed on) is EBADF, not a panic
		// or an open of the path.
		name: "negative fd",
		open: func(t *testing.T) (int, unix.Stat_t) { return -1, unix.Stat_t{} },
		want: unix.EBADF,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, st := tt.open(t)
			fs, err := New(tr.root, WithRootFD(fd))
			if err == nil {
				fs.Close()
				t.Fatalf("New accepted %s", tt.name)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("New: %v, want %v", err, tt.want)
			}
			if fd >= 0 && pointsAt(fd, st) {
				unix.Close(fd)
				t.Error("New failed but left the fd open")
			}
		})
	}
}
