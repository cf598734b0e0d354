package hostfs

import (
	"bytes"
	"errors"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func needUserXattrs(t *testing.T, path string) {
	t.Helper()
	if err := unix.Lsetxattr(path, "user.probe", []byte("p"), 0); err != nil {
		t.Skipf("no user xattrs on the test file system: %v", err)
	}
	must(t, unix.Lremovexattr(path, "user.probe"))
}

func TestXattrs(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		tr := newTree(t)
		needUserXattrs(t, tr.path("file.txt"))
		_, root := attach(t, tr.root, opts...)
		// Each File kind reaches the inode its own way: a walked (O_PATH)
		// file, an open file, an open directory.
		for _, row := range []struct {
			name, path string
			open       bool
		}{
			{"file", "file.txt", false},     // O_PATH: *xattrat or a reopened fd
			{"open-file", "file.txt", true}, // the open fd directly
			{"dir", "dir", false},           // directories carry user.* too
			{"open-dir", "dir", true},       // through the open directory fd
		} {
			t.Run(row.name, func(t *testing.T) {
				f := walkTo(t, root, row.path)
				if row.open {
					_, _, err := f.Open(p9.ReadOnly)
					must(t, err)
				}
				attr := "user." + row.name
				must(t, f.SetXattr(attr, []byte("v1"), 0))
				wantErr(t, f.SetXattr(attr, []byte("v2"), p9.XattrCreate), linux.EEXIST, "XATTR_CREATE existing")
				must(t, f.SetXattr(attr, []byte("v3"), p9.XattrReplace))
				wantErr(t, f.SetXattr("user.absent", []byte("v"), p9.XattrReplace), linux.ENODATA, "XATTR_REPLACE missing")
				got, err := f.GetXattr(attr)
				must(t, err)
				if string(got) != "v3" {
					t.Errorf("get %q", got)
				}
				host := make([]byte, 16)
				n, err := unix.Lgetxattr(tr.path(row.path), attr, host)
				if err != nil || string(host[:n]) != "v3" {
					t.Errorf("host %q, %v", host[:n], err)
				}
				names, err := f.ListXattrs()
				must(t, err)
				if !contains(names, attr) {
					t.Errorf("list %v lacks %s", names, attr)
				}
				must(t, f.RemoveXattr(attr))
				_, err = f.GetXattr(attr)
				wantErr(t, err, linux.ENODATA, "get removed")
				wantErr(t, f.RemoveXattr(attr), linux.ENODATA, "remove removed")
			})
		}
		// Values larger than the first buffer, and the empty value.
		t.Run("sizes", func(t *testing.T) {
			f := walkTo(t, root, "file.txt")
			val := bytes.Repeat([]byte("z"), 3000)
			must(t, f.SetXattr("user.big", val, 0))
			got, err := f.GetXattr("user.big")
			if err != nil || !bytes.Equal(got, val) {
				t.Errorf("get %d bytes, %v", len(got), err)
			}
			must(t, f.SetXattr("user.empty", nil, 0))
			got, err = f.GetXattr("user.empty")
			if err != nil || len(got) != 0 {
				t.Errorf("get empty: %q, %v", got, err)
			}
		})
		// The list holds only user.* names, even when the host has others.
		t.Run("list-filters-namespaces", func(t *testing.T) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to set a trusted.* xattr")
			}
			must(t, os.WriteFile(tr.path("ns"), nil, 0o644))
			if err := unix.Lsetxattr(tr.path("ns"), "trusted.hidden", []byte("h"), 0); err != nil {
				t.Skipf("no trusted xattrs: %v", err)
			}
			must(t, unix.Lsetxattr(tr.path("ns"), "user.shown", []byte("s"), 0))
			names, err := walkTo(t, root, "ns").ListXattrs()
			must(t, err)
			sort.Strings(names)
			if strings.Join(names, ",") != "user.shown" {
				t.Errorf("list %v", names)
			}
			_, err = walkTo(t, root, "ns").GetXattr("trusted.hidden")
			wantErr(t, err, linux.EOPNOTSUPP, "get trusted.*")
		})
		// Refusals, checked before any system call.
		t.Run("refused", func(t *testing.T) {
			must(t, unix.Mkfifo(tr.path("fifo"), 0o644))
			f := walkTo(t, root, "file.txt")
			for _, row := range []struct {
				name string
				err  error
				want linux.Errno
			}{
				{"symlink", walkTo(t, root, "link-file").SetXattr("user.x", nil, 0), linux.EOPNOTSUPP},     // never through a link
				{"symlink-get", second(walkTo(t, root, "link-file").GetXattr("user.x")), linux.EOPNOTSUPP}, // not even reads
				{"symlink-list", second(walkTo(t, root, "link-file").ListXattrs()), linux.EOPNOTSUPP},      // nor lists
				{"fifo", walkTo(t, root, "fifo").SetXattr("user.x", nil, 0), linux.EOPNOTSUPP},             // special files carry none
				{"trusted", f.SetXattr("trusted.x", nil, 0), linux.EOPNOTSUPP},                             // host kernel namespace
				{"security", f.SetXattr("security.capability", []byte{1}, 0), linux.EOPNOTSUPP},            // file capabilities
				{"acl", f.RemoveXattr("system.posix_acl_access"), linux.EOPNOTSUPP},                        // ACLs
				{"empty-name", f.SetXattr("", nil, 0), linux.ERANGE},                                       // as setxattr(2)
				{"long-name", f.SetXattr("user."+strings.Repeat("n", 251), nil, 0), linux.ERANGE},          // 256 > XATTR_NAME_MAX
				{"nul-name", f.SetXattr("user.a\x00b", nil, 0), linux.EINVAL},                              // would truncate the name
				{"too-big", f.SetXattr("user.x", make([]byte, xattrSizeMax+1), 0), linux.E2BIG},            // > XATTR_SIZE_MAX
				{"bad-flags", f.SetXattr("user.x", nil, 4), linux.EINVAL},                                  // only XATTR_CREATE|XATTR_REPLACE
			} {
				wantErr(t, row.err, row.want, row.name)
			}
		})
	})
}

func second[T any](_ T, err error) error { return err }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// sizedValue is a fake xattr for readSized that changes size between
// calls as a racing setxattr would: call i sees sizes[i] (the last size
// once the list runs out), with getxattr's semantics: a zero-length
// buffer asks for the size, a smaller buffer is ERANGE.
type sizedValue struct {
	sizes []int
	calls int
}

func (v *sizedValue) read(buf []byte) (int, error) {
	size := v.sizes[min(v.calls, len(v.sizes)-1)]
	v.calls++
	switch {
	case len(buf) == 0:
		return size, nil
	case size > len(buf):
		return 0, unix.ERANGE
	}
	for i := range buf[:size] {
		buf[i] = 'v'
	}
	return size, nil
}

// TestReadSized holds review finding 5: readSized never slices past its
// buffer whatever the value does between its calls. Before the fix, a
// value that shrank to empty after the size probe made it read into a
// zero-length buffer, which getxattr answers with the (larger) current
// size, and buf[:n] panicked.
func TestReadSized(t *testing.T) {
	for _, row := range []struct {
		name      string
		first     int
		sizes     []int
		want      int // bytes returned
		wantErr   error
		wantCalls int
	}{
		// The value fits the first buffer: one call.
		{"fits", 256, []int{100}, 100, nil, 1},
		// Larger than the first buffer: probe, then read at that size.
		{"larger", 256, []int{4000, 4000, 4000}, 4000, nil, 3},
		// Shrinks to empty after the first read: the probe says 0, which
		// is the value (no read into a zero-length buffer, which would
		// be a size query answering 4000 again: the panic).
		{"shrinks-to-empty", 256, []int{4000, 0, 4000}, 0, nil, 2},
		// Grows again between the probe and the read: probe again.
		{"grows-after-probe", 256, []int{4000, 4000, 8000, 8000, 8000}, 8000, nil, 5},
		// A read that reports more than its buffer (a zero-length first
		// buffer is a size query) is a change under us: probe again.
		{"reports-more-than-buffer", 0, []int{10, 10, 10}, 10, nil, 3},
		// Never stable: a bounded number of tries, then ERANGE.
		{"never-stable", 256, []int{300, 300, 600, 600, 1200, 1200, 2400, 2400, 4800, 4800, 9600}, 0, unix.ERANGE, 8},
		// Larger than XATTR_SIZE_MAX: E2BIG, nothing allocated for it.
		{"too-big", 256, []int{xattrSizeMax + 1}, 0, unix.E2BIG, 2},
	} {
		t.Run(row.name, func(t *testing.T) {
			v := &sizedValue{sizes: row.sizes}
			var got []byte
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("readSized panicked: %v", p)
					}
				}()
				got, err = readSized(v.read, row.first)
			}()
			if !errors.Is(err, row.wantErr) || len(got) != row.want {
				t.Errorf("readSized: %d bytes, %v; want %d bytes, %v", len(got), err, row.want, row.wantErr)
			}
			if v.calls != row.wantCalls {
				t.Errorf("%d reads, want %d", v.calls, row.wantCalls)
			}
		})
	}
}

// TestXattrShrinkRace is review finding 5's repro as a test: one File sets
// a value of 4000 bytes and the empty value in turn while another reads
// it. Every read returns one of the two values; none panics (before the
// fix the server recovered the panic as EIO), and on the fallback path no
// reopened fd is left behind.
func TestXattrShrinkRace(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		tr := newTree(t)
		needUserXattrs(t, tr.path("file.txt"))
		_, root := attach(t, tr.root, opts...)
		setter, getter := walkTo(t, root, "file.txt"), walkTo(t, root, "file.txt")
		big := bytes.Repeat([]byte("v"), 4000)
		must(t, setter.SetXattr("user.x", big, 0))
		before := countFDs(t)
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				for _, val := range [][]byte{big, {}} {
					if err := setter.SetXattr("user.x", val, 0); err != nil {
						done <- err
						return
					}
				}
			}
		}()
		const reads = 3000
		var empty, full, i int
		for ; i < reads && !t.Failed(); i++ {
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Errorf("GetXattr panicked on read %d: %v", i, p)
					}
				}()
				got, err := getter.GetXattr("user.x")
				switch {
				case err != nil:
					t.Errorf("GetXattr: %v", err)
				case len(got) == 0:
					empty++
				case bytes.Equal(got, big):
					full++
				default:
					t.Errorf("GetXattr returned %d bytes, neither value", len(got))
				}
			}()
		}
		close(stop)
		must(t, <-done)
		t.Logf("%d reads: %d empty, %d of 4000 bytes", i, empty, full)
		if after := countFDs(t); after != before {
			t.Errorf("fds: %d before, %d after", before, after)
		}
	})
}

// TestWithXattrReleasesOnPanic: the fd the fallback path reopens for one
// xattr call is closed even when the call panics (review finding 5: each
// recovered panic leaked it).
func TestWithXattrReleasesOnPanic(t *testing.T) {
	tr := newTree(t)
	_, root := attach(t, tr.root, withoutXattrat())
	f := walkTo(t, root, "file.txt")
	before := countFDs(t)
	reopened := false
	func() {
		defer func() {
			if p := recover(); p == nil {
				t.Errorf("the panic did not reach the caller")
			}
		}()
		f.withXattr(func(x xattrFD) error {
			reopened = x.closed
			panic("boom")
		})
	}()
	if !reopened {
		t.Fatalf("the fallback did not reopen an fd")
	}
	if after := countFDs(t); after != before {
		t.Errorf("fds: %d before, %d after the panic", before, after)
	}
}
