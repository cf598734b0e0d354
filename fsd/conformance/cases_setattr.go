package conformance

import (
	"os"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func init() {
	register("setattr", testSetAttr)
	register("setattr-symlink", testSetAttrSymlink)
}

func testSetAttr(t *testing.T, e *env) {
	root := e.rootFile(t)
	// chmod.
	e.run(t, "mode", func(t *testing.T) {
		ok(t, walk(t, root, "file.txt").SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o640}), "setattr")
		if st := lstat(t, e.host("file.txt")); st.Mode != unix.S_IFREG|0o640 {
			t.Errorf("host mode %#o", st.Mode)
		}
	})
	// Truncate grows (with zeros) and shrinks.
	e.run(t, "size", func(t *testing.T) {
		f := walk(t, root, "file.txt")
		ok(t, f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 100000}), "grow")
		got, _ := os.ReadFile(e.host("file.txt"))
		if len(got) != 100000 || string(got[:len(exportFileContent)]) != exportFileContent || got[99999] != 0 {
			t.Errorf("after grow: size %d", len(got))
		}
		ok(t, f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 5}), "shrink")
		if got, _ := os.ReadFile(e.host("file.txt")); string(got) != "hello" {
			t.Errorf("after shrink: %q", got)
		}
	})
	// Truncating a directory answers EISDIR.
	e.run(t, "size-directory-eisdir", func(t *testing.T) {
		err := walk(t, root, "dir").SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0})
		wantErrno(t, err, linux.EISDIR, "truncate dir")
	})
	// A size beyond what the host can represent answers EINVAL.
	e.run(t, "size-huge-einval", func(t *testing.T) {
		err := walk(t, root, "file.txt").SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 1 << 63})
		wantErrno(t, err, linux.EINVAL, "truncate to 2^63")
	})
	// Explicit times arrive with their nanoseconds.
	e.run(t, "times-explicit", func(t *testing.T) {
		err := walk(t, root, "file.txt").SetAttr(
			p9.SetAttrMask{ATime: true, MTime: true, ATimeNotSystemTime: true, MTimeNotSystemTime: true},
			p9.SetAttr{ATimeSeconds: 1000000000, ATimeNanoSeconds: 123456789, MTimeSeconds: 1500000000, MTimeNanoSeconds: 987654321})
		ok(t, err, "setattr")
		st := lstat(t, e.host("file.txt"))
		if st.Atim != (unix.Timespec{Sec: 1000000000, Nsec: 123456789}) || st.Mtim != (unix.Timespec{Sec: 1500000000, Nsec: 987654321}) {
			t.Errorf("host atime %v mtime %v", st.Atim, st.Mtim)
		}
	})
	// "Now" sets the current time (later than an old explicit time).
	e.run(t, "times-now", func(t *testing.T) {
		f := walk(t, root, "file.txt")
		old := p9.SetAttr{ATimeSeconds: 1000, MTimeSeconds: 2000}
		ok(t, f.SetAttr(p9.SetAttrMask{ATime: true, MTime: true, ATimeNotSystemTime: true, MTimeNotSystemTime: true}, old), "old times")
		before := time.Now().Add(-time.Minute).Unix()
		ok(t, f.SetAttr(p9.SetAttrMask{ATime: true, MTime: true}, p9.SetAttr{}), "now")
		if st := lstat(t, e.host("file.txt")); st.Atim.Sec < before || st.Mtim.Sec < before {
			t.Errorf("host atime %v mtime %v, not now", st.Atim, st.Mtim)
		}
	})
	// Only the times asked change (the other is UTIME_OMIT).
	e.run(t, "times-omit", func(t *testing.T) {
		f := walk(t, root, "file.txt")
		was := lstat(t, e.host("file.txt"))
		ok(t, f.SetAttr(p9.SetAttrMask{MTime: true, MTimeNotSystemTime: true}, p9.SetAttr{MTimeSeconds: 1234567890, MTimeNanoSeconds: 5}), "setattr")
		st := lstat(t, e.host("file.txt"))
		if st.Mtim != (unix.Timespec{Sec: 1234567890, Nsec: 5}) || st.Atim != was.Atim {
			t.Errorf("host atime %v (was %v) mtime %v", st.Atim, was.Atim, st.Mtim)
		}
	})
	// Size and mtime in one request: the truncate does not clobber the
	// requested mtime.
	e.run(t, "size-then-times", func(t *testing.T) {
		err := walk(t, root, "file.txt").SetAttr(
			p9.SetAttrMask{Size: true, MTime: true, MTimeNotSystemTime: true},
			p9.SetAttr{Size: 3, MTimeSeconds: 1111111111, MTimeNanoSeconds: 42})
		ok(t, err, "setattr")
		st := lstat(t, e.host("file.txt"))
		if st.Size != 3 || st.Mtim != (unix.Timespec{Sec: 1111111111, Nsec: 42}) {
			t.Errorf("host size %d mtime %v", st.Size, st.Mtim)
		}
	})
	// Nanoseconds out of range answer EINVAL and change nothing.
	e.run(t, "times-bad-nsec-einval", func(t *testing.T) {
		was := lstat(t, e.host("file.txt"))
		err := walk(t, root, "file.txt").SetAttr(
			p9.SetAttrMask{Size: true, MTime: true, MTimeNotSystemTime: true},
			p9.SetAttr{Size: 1, MTimeSeconds: 1, MTimeNanoSeconds: 1e9})
		wantErrno(t, err, linux.EINVAL, "nsec 1e9")
		if st := lstat(t, e.host("file.txt")); st.Size != was.Size || st.Mtim != was.Mtim {
			t.Errorf("changed: size %d mtime %v", st.Size, st.Mtim)
		}
	})
}

func testSetAttrSymlink(t *testing.T, e *env) {
	root := e.rootFile(t)
	// Times on a symlink fid change the link, never the canary.
	e.run(t, "times", func(t *testing.T) {
		err := walk(t, root, "to-canary").SetAttr(
			p9.SetAttrMask{ATime: true, MTime: true, ATimeNotSystemTime: true, MTimeNotSystemTime: true},
			p9.SetAttr{ATimeSeconds: 1234, MTimeSeconds: 5678})
		ok(t, err, "setattr times")
		if st := lstat(t, e.host("to-canary")); st.Mtim.Sec != 5678 {
			t.Errorf("link mtime %v", st.Mtim)
		}
	})
	// chmod of a symlink answers EOPNOTSUPP (as fchmodat(AT_SYMLINK_NOFOLLOW)).
	e.run(t, "mode-eopnotsupp", func(t *testing.T) {
		err := walk(t, root, "to-canary").SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777})
		wantErrno(t, err, linux.EOPNOTSUPP, "chmod symlink")
	})
	// Truncating a symlink answers EINVAL.
	e.run(t, "size-einval", func(t *testing.T) {
		err := walk(t, root, "to-canary").SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0})
		wantErrno(t, err, linux.EINVAL, "truncate symlink")
	})
	// chown of a symlink changes the link's owner only.
	e.run(t, "owner", func(t *testing.T) {
		needRoot(t)
		err := walk(t, root, "to-canary").SetAttr(p9.SetAttrMask{UID: true, GID: true}, p9.SetAttr{UID: 4321, GID: 8765})
		ok(t, err, "chown symlink")
		if st := lstat(t, e.host("to-canary")); st.Uid != 4321 || st.Gid != 8765 {
			t.Errorf("link owner %d:%d", st.Uid, st.Gid)
		}
	})
}
