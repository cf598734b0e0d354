package hostfs

import (
	"os"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// openRW walks from root to name and opens the new File read-write.
func openRW(t *testing.T, root *file, name string) *file {
	t.Helper()
	f := walkTo(t, root, name)
	_, _, err := f.Open(p9.ReadWrite)
	must(t, err)
	return f
}

func TestLocks(t *testing.T) {
	tr := newTree(t)
	_, root := attach(t, tr.root)
	a, b := openRW(t, root, "file.txt"), openRW(t, root, "file.txt")
	lock := func(f *file, typ p9.LockType, flags p9.LockFlags, start, length uint64) p9.LockStatus {
		t.Helper()
		st, err := f.Lock(1, typ, flags, start, length, "c")
		must(t, err)
		return st
	}
	for _, row := range []struct {
		name          string
		f             *file
		typ           p9.LockType
		flags         p9.LockFlags
		start, length uint64
		want          p9.LockStatus
	}{
		{"a-write-0-10", a, p9.WriteLock, 0, 0, 10, p9.LockStatusOK},                            // a takes [0,10)
		{"b-blocking-conflict", b, p9.WriteLock, p9.LockFlagsBlock, 5, 1, p9.LockStatusBlocked}, // answered at once, never waits
		{"b-read-conflict", b, p9.ReadLock, 0, 9, 1, p9.LockStatusBlocked},
		{"b-disjoint", b, p9.WriteLock, 0, 10, 5, p9.LockStatusOK},  // [10,15) is free
		{"a-relock-own", a, p9.ReadLock, 0, 0, 10, p9.LockStatusOK}, // an owner converts its own lock
		{"b-read-shares", b, p9.ReadLock, 0, 0, 5, p9.LockStatusOK}, // read locks share
		{"a-unlock", a, p9.Unlock, 0, 0, 0, p9.LockStatusOK},
		{"b-write-after-unlock", b, p9.WriteLock, 0, 0, 10, p9.LockStatusOK},
	} {
		t.Run(row.name, func(t *testing.T) {
			if got := lock(row.f, row.typ, row.flags, row.start, row.length); got != row.want {
				t.Errorf("status %v, want %v", got, row.want)
			}
		})
	}
	// The locks are host OFD locks, visible to the host.
	t.Run("host-visible", func(t *testing.T) {
		h, err := os.OpenFile(tr.path("file.txt"), os.O_RDWR, 0)
		must(t, err)
		defer h.Close()
		lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 1}
		must(t, unix.FcntlFlock(h.Fd(), unix.F_OFD_GETLK, &lk))
		if lk.Type != unix.F_WRLCK {
			t.Errorf("host sees %d, want b's write lock", lk.Type)
		}
	})
	t.Run("getlock", func(t *testing.T) {
		typ, start, length, _, _, err := a.GetLock(p9.WriteLock, 3, 1, 9, "a")
		must(t, err)
		if typ != p9.WriteLock || start != 0 || length != 15 {
			t.Errorf("getlock: %v [%d,+%d), want b's write lock on [0,15)", typ, start, length)
		}
		typ, start, length, pid, client, err := a.GetLock(p9.WriteLock, 100, 5, 9, "a")
		must(t, err)
		if typ != p9.Unlock || start != 100 || length != 5 || pid != 9 || client != "a" {
			t.Errorf("getlock free range: %v %d %d %d %q", typ, start, length, pid, client)
		}
		_, _, _, _, _, err = a.GetLock(p9.Unlock, 0, 0, 1, "a")
		wantErr(t, err, linux.EINVAL, "getlock of type unlock")
	})
	t.Run("validation", func(t *testing.T) {
		_, err := a.Lock(1, 9, 0, 0, 0, "c")
		wantErr(t, err, linux.EINVAL, "type 9")
		_, err = a.Lock(1, p9.WriteLock, 0, 1<<63, 0, "c")
		wantErr(t, err, linux.EINVAL, "start 2^63")
		_, err = a.Lock(1, p9.WriteLock, 0, 1<<62, 1<<62+1, "c")
		wantErr(t, err, linux.EINVAL, "range past 2^63")
		ro := walkTo(t, root, "file.txt")
		_, _, err = ro.Open(p9.ReadOnly)
		must(t, err)
		_, err = ro.Lock(1, p9.WriteLock, 0, 0, 0, "c")
		wantErr(t, err, linux.EBADF, "write lock on a read-only open")
	})
	// Closing a File releases its locks.
	t.Run("close-releases", func(t *testing.T) {
		must(t, b.Close())
		if got := lock(a, p9.WriteLock, 0, 0, 0); got != p9.LockStatusOK {
			t.Errorf("after b's close: %v", got)
		}
	})
}

// TestGetLockHidesHolderPID holds review finding 8: Tgetlock reports the
// type and range of a conflicting lock but never its holder's pid, which
// for a lock a host process holds is a host PID (before the fix the guest
// learnt it; an OFD lock's holder came back as -1).
func TestGetLockHidesHolderPID(t *testing.T) {
	tr := newTree(t)
	_, root := attach(t, tr.root)
	guest, asker := openRW(t, root, "file.txt"), openRW(t, root, "file.txt")
	for _, row := range []struct {
		name string
		// hold takes the conflicting lock on [10,30) and returns its
		// release.
		hold func(t *testing.T) func()
	}{
		// A host process's classic POSIX lock (this test process's:
		// F_OFD_GETLK reports its pid).
		{"host-process-posix-lock", func(t *testing.T) func() {
			h, err := os.OpenFile(tr.path("file.txt"), os.O_RDWR, 0)
			must(t, err)
			lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 10, Len: 20}
			must(t, unix.FcntlFlock(h.Fd(), unix.F_SETLK, &lk))
			return func() { h.Close() }
		}},
		// Another guest fid's lock (an OFD lock: the host reports -1).
		{"guest-ofd-lock", func(t *testing.T) func() {
			st, err := guest.Lock(1, p9.WriteLock, 0, 10, 20, "g")
			if err != nil || st != p9.LockStatusOK {
				t.Fatalf("guest lock: %v, %v", st, err)
			}
			return func() {
				if _, err := guest.Lock(1, p9.Unlock, 0, 0, 0, "g"); err != nil {
					t.Error(err)
				}
			}
		}},
	} {
		t.Run(row.name, func(t *testing.T) {
			release := row.hold(t)
			typ, start, length, pid, client, err := asker.GetLock(p9.ReadLock, 15, 1, 77, "asker")
			release()
			must(t, err)
			if typ != p9.WriteLock || start != 10 || length != 20 {
				t.Errorf("getlock: %v [%d,+%d), want the write lock on [10,+20)", typ, start, length)
			}
			if pid != 0 || client != "" {
				t.Errorf("getlock reports pid %d, client %q: want 0 and \"\" (this process is %d)", pid, client, os.Getpid())
			}
		})
	}
}
