// Package conformance is the acceptance suite every fsd server and attach
// point must pass, whatever the combination: p9's reference server over
// hostfs, our own fsd/server over hostfs, or the real daemon process.
//
// A Target starts a server for a fresh host tree and returns the path of
// the unix socket it listens on; Run then drives it like a guest would,
// through p9's client (p9.NewClient over a real unix socket) and, for what
// p9's client cannot send, through a minimal raw-frame helper (xattrs,
// Tlock with a fid, Tgetlock, Tflush, modes with setuid/setgid, Tattach
// with a uid). Every effect is checked on the host: file contents byte for
// byte, modes, owners, times, link counts, directory listings.
//
// Each top-level case gets its own tree in t.TempDir() and its own server:
//
//	<tmp>/export/          the root export (aname "" or "/")
//	<tmp>/ro-export/       a read-only extra export, attached by tag "ro"
//	<tmp>/canary.txt       a file outside the exports
//	<tmp>/canary-dir/      a directory outside the exports
//
// and the export holds symlinks that point at the canaries, at "/" and up
// with "..". The escape cases then try to read, write, link or create
// outside through them, with "..", with names containing "/", with hard
// links to symlinks, and while a host thread swaps a directory and a
// symlink with renameat2(RENAME_EXCHANGE); after each one the canaries'
// contents, times, link counts, xattrs and listing must be untouched.
//
// Protocol expectations beyond the operations themselves: errors are exact
// Linux errnos (ENOTEMPTY, EPERM, ELOOP, ENXIO...); a walk that fails after
// its first name is a partial Rwalk (walk(5)); every mutation of the
// read-only export is EROFS; blocking lock requests are answered at once
// ("blocked"); Tflush never lets a reply follow its Rflush.
//
// Case names are stable ("group/row"): Target.Skip names the cases a target
// is known to fail, with the reason, and Run fails on a Skip entry that
// names no case. Cases that need root skip themselves when not root.
package conformance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Mount is an extra export: attached with aname Tag, serving Source.
type Mount struct {
	Tag      string
	Source   string
	ReadOnly bool
}

// Target is a server under test.
type Target struct {
	// Start serves root (the root export, aname "" or "/") and the
	// extra exports, listening on a unix socket, and returns its path.
	// It registers its own cleanup with t.Cleanup. Each connection the
	// suite makes attaches one export.
	Start func(t *testing.T, root string, mounts []Mount) (socketPath string)
	// Skip lists case names ("group/row", or a group) the target is
	// known to fail, with the reason.
	Skip map[string]string
}

// ROTag is the tag of the read-only extra export every case gets.
const ROTag = "ro"

// rpcTimeout only guards against hangs; no test measures time.
const rpcTimeout = 60 * time.Second

// Run runs every case against target.
func Run(t *testing.T, target Target) {
	if target.Start == nil {
		t.Fatal("conformance: Target.Start is nil")
	}
	s := &suite{target: target, used: make(map[string]bool)}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if s.skipped(t, c.name) {
				return
			}
			c.fn(t, newEnv(t, s, c.name))
		})
	}
	known := make(map[string]bool)
	for _, c := range cases {
		known[c.name] = true
	}
	for name := range target.Skip {
		// A row that never ran (its case skipped itself, say when not
		// root) cannot be matched; its case must exist at least.
		if !s.used[name] && !known[strings.SplitN(name, "/", 2)[0]] {
			t.Errorf("conformance: Skip entry %q names no case", name)
		}
	}
}

// suite is one Run.
type suite struct {
	target Target
	mu     sync.Mutex
	used   map[string]bool // Skip entries that matched a case
}

// skipped skips t if the target's Skip names it (or a group holding it).
func (s *suite) skipped(t *testing.T, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, reason := range s.target.Skip {
		if name == key || strings.HasPrefix(name, key+"/") {
			s.used[key] = true
			t.Skipf("known failure of this target: %s", reason)
			return true
		}
	}
	return false
}

// testCase is one top-level case.
type testCase struct {
	name string
	fn   func(t *testing.T, e *env)
}

// cases is every case, in order; the files cases_*.go fill it.
var cases []testCase

func register(name string, fn func(t *testing.T, e *env)) {
	cases = append(cases, testCase{name, fn})
}

// env is one case's host tree and server.
type env struct {
	s    *suite
	name string

	base      string
	root      string // the root export
	ro        string // the read-only export's source
	canary    string
	canaryDir string
	sock      string

	canaryState canaryState
}

const (
	canaryContent      = "CANARY FILE: must never be read or written\n"
	canaryInnerContent = "CANARY\n"
	exportFileContent  = "hello, export\n"
)

// newEnv builds the tree and starts the target.
func newEnv(t *testing.T, s *suite, name string) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{
		s:         s,
		name:      name,
		base:      base,
		root:      filepath.Join(base, "export"),
		ro:        filepath.Join(base, "ro-export"),
		canary:    filepath.Join(base, "canary.txt"),
		canaryDir: filepath.Join(base, "canary-dir"),
	}
	mustHost(t, os.Mkdir(e.root, 0o755))
	mustHost(t, os.Mkdir(e.ro, 0o755))
	mustHost(t, os.Mkdir(e.canaryDir, 0o755))
	mustHost(t, os.WriteFile(e.canary, []byte(canaryContent), 0o644))
	mustHost(t, os.WriteFile(filepath.Join(e.canaryDir, "inner"), []byte(canaryInnerContent), 0o644))

	mustHost(t, os.WriteFile(filepath.Join(e.root, "file.txt"), []byte(exportFileContent), 0o644))
	mustHost(t, os.Mkdir(filepath.Join(e.root, "dir"), 0o755))
	mustHost(t, os.WriteFile(filepath.Join(e.root, "dir", "sub.txt"), []byte("sub\n"), 0o644))
	mustHost(t, os.Symlink("/", filepath.Join(e.root, "to-root")))
	mustHost(t, os.Symlink(e.canary, filepath.Join(e.root, "to-canary")))
	mustHost(t, os.Symlink("../canary.txt", filepath.Join(e.root, "to-canary-rel")))
	mustHost(t, os.Symlink(e.canaryDir, filepath.Join(e.root, "to-canary-dir")))
	mustHost(t, os.Symlink("../../../../../../..", filepath.Join(e.root, "to-dotdot")))

	mustHost(t, os.WriteFile(filepath.Join(e.ro, "ro.txt"), []byte("read only\n"), 0o644))
	mustHost(t, os.Mkdir(filepath.Join(e.ro, "rodir"), 0o755))
	mustHost(t, os.WriteFile(filepath.Join(e.ro, "rodir", "x"), []byte("x\n"), 0o644))

	// Old access times, newer modification times: under relatime (and
	// strictatime) any read of a canary moves its atime.
	old := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	mod := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, p := range []string{e.canary, filepath.Join(e.canaryDir, "inner"), e.canaryDir} {
		mustHost(t, os.Chtimes(p, old, mod))
	}
	e.canaryState = e.snapshotCanaries(t)

	e.sock = s.target.Start(t, e.root, []Mount{{Tag: ROTag, Source: e.ro, ReadOnly: true}})
	t.Cleanup(func() { e.checkCanaries(t) })
	return e
}

// run runs a table row as a subtest, honouring the target's Skip.
func (e *env) run(t *testing.T, row string, fn func(t *testing.T)) {
	t.Helper()
	name := e.name + "/" + row
	t.Run(row, func(t *testing.T) {
		if e.s.skipped(t, name) {
			return
		}
		fn(t)
	})
}

// client dials the target and negotiates msize.
func (e *env) client(t *testing.T, msize uint32) *p9.Client {
	t.Helper()
	conn, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatalf("dial %s: %v", e.sock, err)
	}
	c, err := p9.NewClient(conn, p9.WithMessageSize(msize))
	if err != nil {
		conn.Close()
		t.Fatalf("9P version: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// attach attaches aname on a new connection.
func (e *env) attach(t *testing.T, aname string) p9.File {
	t.Helper()
	f, err := e.client(t, 64<<10).Attach(aname)
	if err != nil {
		t.Fatalf("attach %q: %v", aname, err)
	}
	return f
}

// rootFile attaches the root export.
func (e *env) rootFile(t *testing.T) p9.File { return e.attach(t, "") }

// raw opens a raw connection with the root export attached as fid 0 (or
// the export named by aname), as uid.
func (e *env) raw(t *testing.T, aname string, uid uint32) *rawConn {
	t.Helper()
	r := dialRaw(t, e.sock)
	if _, err := r.attach(0, aname, uid); err != nil {
		t.Fatalf("raw attach %q: %v", aname, err)
	}
	return r
}

// host returns the host path of a path relative to the root export.
func (e *env) host(rel string) string { return filepath.Join(e.root, rel) }

// canaryState is everything observable about the canaries.
type canaryState struct {
	content, inner []byte
	st, innerSt    unix.Stat_t
	dirSt          unix.Stat_t
	listing        []string
	xattrs         string
}

func (e *env) snapshotCanaries(t *testing.T) canaryState {
	t.Helper()
	var c canaryState
	var err error
	// Stat first, then read with O_NOATIME so that looking does not move
	// the atimes being watched.
	mustHost(t, unix.Lstat(e.canary, &c.st))
	mustHost(t, unix.Lstat(filepath.Join(e.canaryDir, "inner"), &c.innerSt))
	mustHost(t, unix.Lstat(e.canaryDir, &c.dirSt))
	c.content, err = readNoAtime(e.canary)
	mustHost(t, err)
	c.inner, err = readNoAtime(filepath.Join(e.canaryDir, "inner"))
	mustHost(t, err)
	c.listing, err = listNoAtime(e.canaryDir)
	mustHost(t, err)
	c.xattrs = hostXattrs(e.canary)
	return c
}

// checkCanaries fails t if anything about the canaries changed.
func (e *env) checkCanaries(t *testing.T) {
	t.Helper()
	now := e.snapshotCanaries(t)
	was := e.canaryState
	if string(now.content) != string(was.content) || string(now.inner) != string(was.inner) {
		t.Errorf("ESCAPE: canary contents changed: %q, %q", now.content, now.inner)
	}
	for _, c := range []struct {
		what     string
		now, was *unix.Stat_t
	}{
		{"canary.txt", &now.st, &was.st},
		{"canary-dir/inner", &now.innerSt, &was.innerSt},
		{"canary-dir", &now.dirSt, &was.dirSt},
	} {
		if c.now.Ino != c.was.Ino || c.now.Nlink != c.was.Nlink || c.now.Mode != c.was.Mode ||
			c.now.Uid != c.was.Uid || c.now.Gid != c.was.Gid || c.now.Size != c.was.Size {
			t.Errorf("ESCAPE: %s changed: ino %d->%d nlink %d->%d mode %o->%o owner %d:%d->%d:%d size %d->%d",
				c.what, c.was.Ino, c.now.Ino, c.was.Nlink, c.now.Nlink, c.was.Mode, c.now.Mode,
				c.was.Uid, c.was.Gid, c.now.Uid, c.now.Gid, c.was.Size, c.now.Size)
		}
		if c.now.Mtim != c.was.Mtim || c.now.Ctim != c.was.Ctim {
			t.Errorf("ESCAPE: %s modified: mtime %v->%v ctime %v->%v", c.what, c.was.Mtim, c.now.Mtim, c.was.Ctim, c.now.Ctim)
		}
		if c.now.Atim != c.was.Atim {
			t.Errorf("ESCAPE: %s was read: atime %v->%v", c.what, c.was.Atim, c.now.Atim)
		}
	}
	if strings.Join(now.listing, "/") != strings.Join(was.listing, "/") {
		t.Errorf("ESCAPE: canary-dir listing changed: %v -> %v", was.listing, now.listing)
	}
	if now.xattrs != was.xattrs {
		t.Errorf("ESCAPE: canary xattrs changed: %q -> %q", was.xattrs, now.xattrs)
	}
}

// readNoAtime reads a file with O_NOATIME (we own it), so that checking a
// canary does not itself move its atime.
func readNoAtime(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil || n == 0 {
			return out, nil
		}
	}
}

// listNoAtime lists a directory with O_NOATIME.
func listNoAtime(path string) ([]string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// hostXattrs lists a file's xattrs (without following symlinks); "" when
// the file system has none or does not support them.
func hostXattrs(path string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// mustHost fails the test on a host-side error (setup, checks).
func mustHost(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("host: %v", err)
	}
}

// ok fails the test if a 9P operation failed.
func ok(t *testing.T, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}

// wantErrno fails the test unless err is exactly want.
func wantErrno(t *testing.T, err error, want linux.Errno, what string, args ...any) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v, want %v (%d)", fmt.Sprintf(what, args...), err, want, uintptr(want))
	}
}

// wantFail fails the test if err is nil (escape attempts: any refusal
// will do, the canaries prove nothing leaked).
func wantFail(t *testing.T, err error, what string, args ...any) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want an error", fmt.Sprintf(what, args...))
	}
}

// isRoot reports whether the suite runs as root; cases that need it skip
// otherwise.
func isRoot() bool { return os.Geteuid() == 0 }

func needRoot(t *testing.T) {
	t.Helper()
	if !isRoot() {
		t.Skip("needs root (chown to other ids, device nodes)")
	}
}

// lstat stats a host path without following symlinks.
func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	mustHost(t, unix.Lstat(path, &st))
	return st
}

// errPartialWalk reports a walk the server answered with fewer QIDs than
// names (9P's partial Rwalk: no new fid). p9's client returns such a walk
// as a success with a File whose fid does not exist; walkFull turns it
// into this error.
var errPartialWalk = errors.New("partial walk")

// walkFull walks names from dir; a partial walk is errPartialWalk.
func walkFull(dir p9.File, names []string) ([]p9.QID, p9.File, error) {
	qids, f, err := dir.Walk(names)
	if err != nil {
		return qids, nil, err
	}
	if len(qids) != len(names) {
		f.Close() // returns the fid number to p9's client pool
		return qids, nil, fmt.Errorf("%w: %d of %d names", errPartialWalk, len(qids), len(names))
	}
	return qids, f, nil
}

// walk walks names from dir and returns the new File.
func walk(t *testing.T, dir p9.File, names ...string) p9.File {
	t.Helper()
	_, f, err := walkFull(dir, names)
	ok(t, err, "walk %v", names)
	return f
}

// create creates name in dir (on a clone: p9's client turns the File
// Create is called on into the new file) and returns the open File.
func create(dir p9.File, name string, flags p9.OpenFlags, mode p9.FileMode) (p9.File, p9.QID, error) {
	_, c, err := dir.Walk(nil)
	if err != nil {
		return nil, p9.QID{}, err
	}
	f, qid, _, err := c.Create(name, flags, mode, p9.NoUID, p9.NoGID)
	if err != nil {
		c.Close()
		return nil, p9.QID{}, err
	}
	return f, qid, nil
}

// readAll reads a whole open File from offset 0.
func readAll(f p9.File) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := f.ReadAt(buf, int64(len(out)))
		out = append(out, buf[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		if n == 0 {
			return out, nil
		}
	}
}
