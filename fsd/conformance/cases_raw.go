package conformance

import (
	"bytes"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func init() {
	register("xattr", testXattr)
	register("lock", testLock)
	register("flush", testFlush)
}

// xattrFids hands out fresh fid numbers on a raw connection. Xattr cases
// never clunk the fids they walk: p9's reference server releases a fid's
// parent when an xattr fid made from it is clunked (a known defect), and
// the extra walked fids keep that from closing the attach fid.
type xattrFids struct {
	r    *rawConn
	next uint32
}

func (x *xattrFids) fresh(t *testing.T, name string) uint32 {
	t.Helper()
	x.next++
	fid := x.next
	var names []string
	if name != "" {
		names = strings.Split(name, "/")
	}
	_, err := x.r.walk(0, fid, names...)
	ok(t, err, "walk %s", name)
	return fid
}

func (x *xattrFids) tmp() uint32 { x.next++; return x.next }

func (x *xattrFids) set(t *testing.T, file, name string, value []byte, flags uint32) error {
	t.Helper()
	return x.r.setXattr(x.fresh(t, file), x.tmp(), name, value, flags)
}

func (x *xattrFids) get(t *testing.T, file, name string) ([]byte, error) {
	t.Helper()
	return x.r.getXattr(x.fresh(t, file), x.tmp(), name)
}

func (x *xattrFids) remove(t *testing.T, file, name string) error {
	t.Helper()
	return x.r.removeXattr(x.fresh(t, file), x.tmp(), name)
}

// hostGetxattr reads an xattr on the host (not following symlinks).
func hostGetxattr(path, name string) ([]byte, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func testXattr(t *testing.T, e *env) {
	if err := unix.Lsetxattr(e.host("file.txt"), "user.probe", []byte("p"), 0); err != nil {
		t.Skipf("the host file system has no user xattrs: %v", err)
	}
	mustHost(t, unix.Lremovexattr(e.host("file.txt"), "user.probe"))
	newX := func(t *testing.T) *xattrFids { return &xattrFids{r: e.raw(t, "", noFID)} }

	// A value set through 9P is on the host and reads back.
	e.run(t, "set-get", func(t *testing.T) {
		x := newX(t)
		ok(t, x.set(t, "file.txt", "user.test", []byte("value"), 0), "setxattr")
		if got, err := hostGetxattr(e.host("file.txt"), "user.test"); err != nil || string(got) != "value" {
			t.Errorf("host value %q, %v", got, err)
		}
		got, err := x.get(t, "file.txt", "user.test")
		ok(t, err, "getxattr")
		if string(got) != "value" {
			t.Errorf("getxattr %q", got)
		}
	})
	// The list holds the user.* names.
	e.run(t, "list", func(t *testing.T) {
		mustHost(t, os.WriteFile(e.host("list.txt"), nil, 0o644))
		mustHost(t, unix.Lsetxattr(e.host("list.txt"), "user.a", []byte("1"), 0))
		mustHost(t, unix.Lsetxattr(e.host("list.txt"), "user.bb", []byte("22"), 0))
		raw, err := newX(t).get(t, "list.txt", "")
		ok(t, err, "listxattr")
		var got []string
		for _, n := range strings.Split(string(raw), "\x00") {
			if n != "" {
				got = append(got, n)
			}
		}
		sort.Strings(got)
		if strings.Join(got, ",") != "user.a,user.bb" {
			t.Errorf("list %q", raw)
		}
	})
	// Removal through 9P removes it on the host.
	e.run(t, "remove", func(t *testing.T) {
		mustHost(t, unix.Lsetxattr(e.host("file.txt"), "user.gone", []byte("x"), 0))
		ok(t, newX(t).remove(t, "file.txt", "user.gone"), "removexattr")
		if _, err := hostGetxattr(e.host("file.txt"), "user.gone"); err != unix.ENODATA {
			t.Errorf("host still has it: %v", err)
		}
	})
	// A missing attribute answers ENODATA.
	e.run(t, "get-missing-enodata", func(t *testing.T) {
		_, err := newX(t).get(t, "file.txt", "user.missing")
		wantErrno(t, err, linux.ENODATA, "getxattr missing")
	})
	// XATTR_CREATE on an existing name answers EEXIST.
	e.run(t, "create-existing-eexist", func(t *testing.T) {
		mustHost(t, unix.Lsetxattr(e.host("file.txt"), "user.x", []byte("old"), 0))
		wantErrno(t, newX(t).set(t, "file.txt", "user.x", []byte("new"), uint32(p9.XattrCreate)), linux.EEXIST, "XATTR_CREATE")
		if got, _ := hostGetxattr(e.host("file.txt"), "user.x"); string(got) != "old" {
			t.Errorf("host value %q", got)
		}
	})
	// XATTR_REPLACE of a missing name answers ENODATA.
	e.run(t, "replace-missing-enodata", func(t *testing.T) {
		wantErrno(t, newX(t).set(t, "file.txt", "user.nope", []byte("v"), uint32(p9.XattrReplace)), linux.ENODATA, "XATTR_REPLACE")
	})
	// Directories carry xattrs too.
	e.run(t, "directory", func(t *testing.T) {
		ok(t, newX(t).set(t, "dir", "user.d", []byte("dv"), 0), "setxattr on dir")
		if got, _ := hostGetxattr(e.host("dir"), "user.d"); string(got) != "dv" {
			t.Errorf("host value %q", got)
		}
	})
	// A value written in pieces arrives whole (2 KiB: ext4 keeps all of
	// a file's xattrs in one block).
	e.run(t, "value-in-pieces", func(t *testing.T) {
		x := newX(t)
		val := bytes.Repeat([]byte("0123456789abcdef"), 128)
		fid, tmp := x.fresh(t, "file.txt"), x.tmp()
		_, err := x.r.walk(fid, tmp)
		ok(t, err, "clone")
		ok(t, x.r.xattrcreate(tmp, "user.big", uint64(len(val)), 0), "xattrcreate")
		for off := 0; off < len(val); off += 512 {
			_, err := x.r.write(tmp, uint64(off), val[off:off+512])
			ok(t, err, "write at %d", off)
		}
		ok(t, x.r.clunk(tmp), "clunk")
		if got, _ := hostGetxattr(e.host("file.txt"), "user.big"); !bytes.Equal(got, val) {
			t.Errorf("host value: %d bytes", len(got))
		}
		got, err := x.get(t, "file.txt", "user.big")
		ok(t, err, "getxattr")
		if !bytes.Equal(got, val) {
			t.Errorf("getxattr: %d bytes", len(got))
		}
	})
	// Only user.* on regular files and directories: symlinks, FIFOs and
	// the host's namespaces answer EOPNOTSUPP.
	mustHost(t, unix.Mkfifo(e.host("fifo"), 0o644))
	for _, row := range []struct{ name, file, attr string }{
		{"symlink", "to-canary", "user.x"},                         // never through a symlink to the canary
		{"fifo", "fifo", "user.x"},                                 // special files carry none
		{"trusted", "file.txt", "trusted.x"},                       // the host kernel's (overlayfs) namespace
		{"security-capability", "file.txt", "security.capability"}, // would grant file capabilities on the host
		{"security-selinux", "file.txt", "security.selinux"},       // the host's LSM labels
		{"posix-acl", "file.txt", "system.posix_acl_access"},       // would grant host users access
	} {
		e.run(t, row.name+"-eopnotsupp", func(t *testing.T) {
			before := hostXattrs(e.host(row.file))
			wantErrno(t, newX(t).set(t, row.file, row.attr, []byte("\x01\x00\x00\x02"), 0), linux.EOPNOTSUPP, "setxattr %s on %s", row.attr, row.file)
			if after := hostXattrs(e.host(row.file)); after != before {
				t.Errorf("host xattrs changed: %q -> %q", before, after)
			}
		})
	}
	// A name longer than XATTR_NAME_MAX answers ERANGE.
	e.run(t, "name-too-long-erange", func(t *testing.T) {
		wantErrno(t, newX(t).set(t, "file.txt", "user."+strings.Repeat("n", 300), []byte("v"), 0), linux.ERANGE, "long name")
	})
}

// lockConn opens name for read-write on a new raw connection as fid 1,
// creating it on the host first if needed. Each row locks its own file:
// a server releases a closed connection's locks asynchronously.
func (e *env) lockConn(t *testing.T, name string) *rawConn {
	t.Helper()
	if _, err := os.Lstat(e.host(name)); err != nil {
		mustHost(t, os.WriteFile(e.host(name), []byte("lock me\n"), 0o644))
	}
	r := e.raw(t, "", noFID)
	_, err := r.walk(0, 1, name)
	ok(t, err, "walk %s", name)
	ok(t, r.lopen(1, uint32(p9.ReadWrite)), "open %s", name)
	return r
}

// hostLockType reports the type of lock a host open file description
// would conflict with on [start, start+length) (F_UNLCK: none).
func hostLockType(t *testing.T, path string, start, length int64) int16 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	mustHost(t, err)
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: length}
	mustHost(t, unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk))
	return lk.Type
}

func testLock(t *testing.T, e *env) {
	const (
		rd, wr, un = uint8(p9.ReadLock), uint8(p9.WriteLock), uint8(p9.Unlock)
		block      = uint32(p9.LockFlagsBlock)
	)
	// A write lock conflicts across fids; a conflicting request, blocking
	// or not, answers "blocked" at once; the lock is a real host lock.
	e.run(t, "conflict-and-release", func(t *testing.T) {
		a, b := e.lockConn(t, "lock-conflict-and-release"), e.lockConn(t, "lock-conflict-and-release")
		want := func(r *rawConn, typ uint8, flags uint32, start, length uint64, status p9.LockStatus) {
			t.Helper()
			got, err := r.lock(1, typ, flags, start, length, 1, "client")
			ok(t, err, "lock type %d", typ)
			if got != status {
				t.Errorf("lock type %d [%d,+%d): status %v, want %v", typ, start, length, got, status)
			}
		}
		want(a, wr, 0, 0, 0, p9.LockStatusOK)
		want(b, wr, block, 0, 0, p9.LockStatusBlocked)
		want(b, rd, 0, 0, 0, p9.LockStatusBlocked)
		if typ := hostLockType(t, e.host("lock-conflict-and-release"), 0, 0); typ != unix.F_WRLCK {
			t.Errorf("host sees lock type %d, want F_WRLCK", typ)
		}
		want(a, un, 0, 0, 0, p9.LockStatusOK)
		if typ := hostLockType(t, e.host("lock-conflict-and-release"), 0, 0); typ != unix.F_UNLCK {
			t.Errorf("host sees lock type %d after unlock", typ)
		}
		want(b, wr, block, 0, 0, p9.LockStatusOK)
		want(a, wr, 0, 0, 0, p9.LockStatusBlocked)
		want(b, un, 0, 0, 0, p9.LockStatusOK)
	})
	// Byte ranges: disjoint ranges coexist, overlapping ones conflict.
	e.run(t, "byte-ranges", func(t *testing.T) {
		a, b := e.lockConn(t, "lock-byte-ranges"), e.lockConn(t, "lock-byte-ranges")
		for _, row := range []struct {
			r             *rawConn
			start, length uint64
			want          p9.LockStatus
		}{
			{a, 0, 10, p9.LockStatusOK},        // a holds [0,10)
			{b, 10, 10, p9.LockStatusOK},       // b holds [10,20): disjoint
			{b, 5, 10, p9.LockStatusBlocked},   // overlaps a's range
			{a, 100, 0, p9.LockStatusOK},       // a holds [100,EOF)
			{b, 1000, 1, p9.LockStatusBlocked}, // inside a's open-ended range
		} {
			got, err := row.r.lock(1, wr, 0, row.start, row.length, 1, "c")
			ok(t, err, "lock")
			if got != row.want {
				t.Errorf("[%d,+%d): %v, want %v", row.start, row.length, got, row.want)
			}
		}
	})
	// Read locks are shared.
	e.run(t, "shared-read-locks", func(t *testing.T) {
		a, b := e.lockConn(t, "lock-shared-read-locks"), e.lockConn(t, "lock-shared-read-locks")
		for _, r := range []*rawConn{a, b} {
			got, err := r.lock(1, rd, 0, 0, 0, 1, "c")
			ok(t, err, "read lock")
			if got != p9.LockStatusOK {
				t.Errorf("read lock: %v", got)
			}
		}
	})
	// Locking a fid that is not open answers EBADF.
	e.run(t, "not-open-ebadf", func(t *testing.T) {
		mustHost(t, os.WriteFile(e.host("lock-not-open-ebadf"), nil, 0o644))
		r := e.raw(t, "", noFID)
		_, err := r.walk(0, 1, "lock-not-open-ebadf")
		ok(t, err, "walk")
		_, err = r.lock(1, wr, 0, 0, 0, 1, "c")
		wantErrno(t, err, linux.EBADF, "lock unopened fid")
	})
	// An unknown lock type answers EINVAL.
	e.run(t, "bad-type-einval", func(t *testing.T) {
		_, err := e.lockConn(t, "lock-bad-type-einval").lock(1, 7, 0, 0, 0, 1, "c")
		wantErrno(t, err, linux.EINVAL, "lock type 7")
	})
	// Tgetlock reports the conflicting lock, or Unlock when none. The
	// holder's pid is never reported (0): for a lock a host process
	// holds it would be a host PID.
	e.run(t, "getlock", func(t *testing.T) {
		a, b := e.lockConn(t, "lock-getlock"), e.lockConn(t, "lock-getlock")
		_, err := a.lock(1, wr, 0, 0, 100, 1, "a")
		ok(t, err, "lock")
		got, err := b.getlock(1, wr, 50, 10, 2, "b")
		ok(t, err, "getlock")
		if got.typ != wr || got.start != 0 || got.length != 100 || got.pid != 0 {
			t.Errorf("getlock: %+v, want a write lock on [0,100) with pid 0", got)
		}
		got, err = b.getlock(1, wr, 200, 10, 2, "b")
		ok(t, err, "getlock")
		if got.typ != un {
			t.Errorf("getlock outside the range: %+v, want unlocked", got)
		}
		// A classic POSIX lock of a host process (this one).
		h, err := os.OpenFile(e.host("lock-getlock"), os.O_RDWR, 0)
		mustHost(t, err)
		defer h.Close()
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 300, Len: 5}
		mustHost(t, unix.FcntlFlock(h.Fd(), unix.F_SETLK, &lk))
		got, err = b.getlock(1, rd, 302, 1, 2, "b")
		ok(t, err, "getlock")
		if got.typ != wr || got.start != 300 || got.length != 5 || got.pid != 0 {
			t.Errorf("getlock of a host process's lock: %+v, want a write lock on [300,305) with pid 0 (not %d)", got, os.Getpid())
		}
	})
}

func testFlush(t *testing.T, e *env) {
	// Flushing a tag that is not in flight answers Rflush.
	e.run(t, "idle-tag", func(t *testing.T) {
		r := e.raw(t, "", noFID)
		var b enc
		b.u16(1234)
		_, err := r.rpc(msgTflush, b)
		ok(t, err, "flush")
	})
	// A request followed at once by its flush: its reply, if any, comes
	// before Rflush, and nothing for it comes after.
	e.run(t, "pipelined", func(t *testing.T) {
		r := e.raw(t, "", noFID)
		var get enc
		get.u32(0)
		get.u64(0x3fff)
		var flush enc
		flush.u16(5)
		if err := r.send(msgTgetattr, 5, get); err != nil {
			t.Fatal(err)
		}
		if err := r.send(msgTflush, 6, flush); err != nil {
			t.Fatal(err)
		}
		for {
			typ, tag, _, err := r.recv()
			ok(t, err, "reply")
			if tag == 6 {
				if typ != msgTflush+1 {
					t.Fatalf("tag 6: type %d, want Rflush", typ)
				}
				break
			}
			if tag != 5 || typ != msgTgetattr+1 {
				t.Fatalf("unexpected reply type %d tag %d", typ, tag)
			}
		}
		var clunk enc
		clunk.u32(999)
		if err := r.send(msgTclunk, 7, clunk); err != nil {
			t.Fatal(err)
		}
		typ, tag, _, err := r.recv()
		ok(t, err, "reply")
		if tag != 7 || typ != msgRlerror {
			t.Errorf("after Rflush: type %d tag %d, want Rlerror for tag 7", typ, tag)
		}
	})
}
