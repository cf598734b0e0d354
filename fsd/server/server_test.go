package server

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/fsd-launcher/fsd-launcher/fsd/proto"
)

// TestP9ClientOperations drives the common operations through p9's client
// and checks their effect on the host directory.
func TestP9ClientOperations(t *testing.T) {
	fs := newTestFS(t)
	_, addr := serve(t, fs)
	c := p9Client(t, addr, 64<<10)
	root, err := c.Attach("/")
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}

	// Create through a clone, write, read back.
	_, dir, err := root.Walk(nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _, _, err := dir.Create("file", p9.ReadWrite, 0o640, 0, 0)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	payload := bytes.Repeat([]byte("0123456789"), 20000) // several messages at 64 KiB
	if n, err := f.WriteAt(payload, 0); err != nil || n != len(payload) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	got := make([]byte, len(payload)+10)
	n, err := f.ReadAt(got, 0)
	if n != len(payload) || !bytes.Equal(got[:n], payload) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if err := f.FSync(); err != nil {
		t.Fatalf("FSync: %v", err)
	}
	if onDisk, _ := os.ReadFile(fs.path("file")); !bytes.Equal(onDisk, payload) {
		t.Fatalf("host file holds %d bytes", len(onDisk))
	}

	// Attributes.
	_, valid, attr, err := f.GetAttr(p9.AttrMaskAll)
	if err != nil || !valid.Size || attr.Size != uint64(len(payload)) || attr.Mode.Permissions() != 0o640 {
		t.Fatalf("GetAttr = %v %v %v", valid, attr, err)
	}
	if err := f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 5}); err != nil {
		t.Fatalf("SetAttr: %v", err)
	}
	if st, _ := os.Stat(fs.path("file")); st.Size() != 5 {
		t.Fatalf("truncate left %d bytes", st.Size())
	}

	// Namespace operations.
	if _, err := root.Mkdir("sub", 0o755, 0, 0); err != nil {
		t.Fatalf("Mkdir: %v", err)
	}
	if _, err := root.Symlink("file", "ln", 0, 0); err != nil {
		t.Fatalf("Symlink: %v", err)
	}
	_, ln, err := root.Walk([]string{"ln"})
	if err != nil {
		t.Fatal(err)
	}
	if target, err := ln.Readlink(); err != nil || target != "file" {
		t.Fatalf("Readlink = %q, %v", target, err)
	}
	if err := root.Link(f, "hard"); err != nil {
		t.Fatalf("Link: %v", err)
	}
	_, sub, err := root.Walk([]string{"sub"})
	if err != nil {
		t.Fatal(err)
	}
	if err := root.RenameAt("hard", sub, "moved"); err != nil {
		t.Fatalf("RenameAt: %v", err)
	}
	if _, err := os.Stat(fs.path("sub/moved")); err != nil {
		t.Fatalf("renameat did not move: %v", err)
	}
	_, moved, err := root.Walk([]string{"sub", "moved"})
	if err != nil {
		t.Fatalf("two-name walk: %v", err)
	}
	if err := moved.Rename(root, "back"); err != nil {
		t.Fatalf("Rename: %v", err)
	}
	if _, err := os.Stat(fs.path("back")); err != nil {
		t.Fatalf("rename did not move: %v", err)
	}
	if err := root.UnlinkAt("back", 0); err != nil {
		t.Fatalf("UnlinkAt: %v", err)
	}
	if _, err := root.Mknod("fifo", p9.ModeNamedPipe|0o600, 0, 0, 0, 0); err != nil {
		t.Fatalf("Mknod: %v", err)
	}
	if _, err := root.StatFS(); err != nil {
		t.Fatalf("StatFS: %v", err)
	}

	// Readdir of the root.
	_, rd, err := root.Walk(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rd.Open(p9.ReadOnly); err != nil {
		t.Fatalf("Open dir: %v", err)
	}
	ents, err := rd.Readdir(0, 4000)
	if err != nil {
		t.Fatalf("Readdir: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	sort.Strings(names)
	if want := []string{"fifo", "file", "ln", "sub"}; !equalStrings(names, want) {
		t.Fatalf("Readdir names %v, want %v", names, want)
	}

	// Tremove of a directory removes it (p9's server answers EISDIR).
	rm := sub.(interface{ Remove() error })
	if err := rm.Remove(); err != nil {
		t.Fatalf("Remove dir: %v", err)
	}
	if _, err := os.Stat(fs.path("sub")); !os.IsNotExist(err) {
		t.Fatalf("directory still there: %v", err)
	}

	// Errors come back as the host errno.
	if _, _, err := root.Walk([]string{"missing"}); err != linux.ENOENT {
		t.Fatalf("walk to a missing name: %v, want ENOENT", err)
	}
	if err := root.UnlinkAt("nonempty", 0x200); err != linux.ENOENT {
		t.Fatalf("rmdir missing: %v", err)
	}
	for _, fl := range []p9.File{f, ln, moved, rd, dir, root} {
		fl.Close()
	}
	c.Close()
	waitFor(t, "all Files closed", func() bool { return fs.live.Load() == 0 })
	if n := fs.doubleClose.Load(); n != 0 {
		t.Fatalf("%d Files closed twice", n)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAttachRouting proves anames go to the Router and its errors come back.
func TestAttachRouting(t *testing.T) {
	fs := newTestFS(t)
	_, addr := serve(t, fs)
	c := versioned(t, addr, 8192)
	tests := []struct {
		aname string
		want  linux.Errno
	}{
		{"", 0},                 // the empty aname is the root export
		{"/", 0},                // so is "/"
		{"other", linux.ENOENT}, // anything else is the router's ENOENT
	}
	for i, tc := range tests {
		got := c.errno(&proto.Tattach{FID: proto.FID(10 + i), Afid: proto.NoFID, Aname: tc.aname, NUname: 0})
		if got != tc.want {
			t.Errorf("attach %q: errno %v, want %v", tc.aname, got, tc.want)
		}
	}
	// An afid is refused: no authentication is offered.
	if got := c.errno(&proto.Tattach{FID: 20, Afid: 3, NUname: 0}); got != linux.EINVAL {
		t.Errorf("attach with afid: %v, want EINVAL", got)
	}
	if got := c.errno(&proto.Tauth{Afid: 3, NUname: 0}); got != linux.EOPNOTSUPP {
		t.Errorf("Tauth: %v, want EOPNOTSUPP", got)
	}
}

// TestFidRules is the table of fid misuse: each row is a request and the
// errno it must get.
func TestFidRules(t *testing.T) {
	fs := newTestFS(t)
	if err := os.WriteFile(fs.path("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(fs.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, addr := serve(t, fs, WithMaxFids(8))
	c := versioned(t, addr, 8192)
	c.attach(1)
	c.walk(1, 2, "f")                                  // fid 2: the file, not open
	c.walk(1, 3, "f")                                  // fid 3: the file, opened read-only below
	c.call(&proto.Tlopen{FID: 3, Flags: p9.ReadOnly})  //
	c.walk(1, 4, "d")                                  // fid 4: a directory
	c.call(&proto.Tlopen{FID: 4, Flags: p9.ReadOnly})  // opened
	c.walk(1, 5, "f")                                  // fid 5: the file, write-only
	c.call(&proto.Tlopen{FID: 5, Flags: p9.WriteOnly}) //
	tests := []struct {
		name string
		msg  proto.Message
		want linux.Errno
	}{
		// An unknown fid is EBADF for every kind of request.
		{"getattr unknown fid", &proto.Tgetattr{FID: 99}, linux.EBADF},
		{"walk from unknown fid", &proto.Twalk{FID: 99, NewFID: 100}, linux.EBADF},
		{"clunk unknown fid", &proto.Tclunk{FID: 99}, linux.EBADF},
		// A newfid already in use is EBADF: fids are never silently replaced.
		{"walk onto a used fid", &proto.Twalk{FID: 1, NewFID: 2}, linux.EBADF},
		{"attach onto a used fid", &proto.Tattach{FID: 2, Afid: proto.NoFID}, linux.EBADF},
		{"xattrwalk onto a used fid", &proto.Txattrwalk{FID: 1, NewFID: 2}, linux.EBADF},
		// Walk names are single elements.
		{"walk ..", &proto.Twalk{FID: 1, NewFID: 9, Names: []string{".."}}, linux.EINVAL},
		{"walk .", &proto.Twalk{FID: 1, NewFID: 9, Names: []string{"."}}, linux.EINVAL},
		{"walk empty name", &proto.Twalk{FID: 1, NewFID: 9, Names: []string{""}}, linux.EINVAL},
		{"walk with slash", &proto.Twalk{FID: 1, NewFID: 9, Names: []string{"d/f"}}, linux.EINVAL},
		{"walk with NUL", &proto.Twalk{FID: 1, NewFID: 9, Names: []string{"f\x00"}}, linux.EINVAL},
		// Walking through a file is ENOTDIR.
		{"walk through a file", &proto.Twalk{FID: 2, NewFID: 9, Names: []string{"x"}}, linux.ENOTDIR},
		// An open fid cannot be replaced by walking it onto itself.
		{"clone open fid onto itself", &proto.Twalk{FID: 3, NewFID: 3, Names: []string{}}, linux.EBUSY},
		{"walk open fid onto itself with a name", &proto.Twalk{FID: 4, NewFID: 4, Names: []string{"x"}}, linux.EBUSY},
		// I/O needs an open fid with the right mode.
		{"read unopened", &proto.Tread{FID: 2, Count: 10}, linux.EBADF},
		{"write unopened", &proto.Twrite{FID: 2, Data: []byte("x")}, linux.EBADF},
		{"write read-only", &proto.Twrite{FID: 3, Data: []byte("x")}, linux.EBADF},
		{"read write-only", &proto.Tread{FID: 5, Count: 10}, linux.EBADF},
		{"readdir unopened", &proto.Treaddir{FID: 1, Count: 100}, linux.EBADF},
		{"readdir on a file", &proto.Treaddir{FID: 3, Count: 100}, linux.ENOTDIR},
		{"fsync unopened", &proto.Tfsync{FID: 2}, linux.EBADF},
		{"lock unopened", &proto.Tlock{FID: 2, LockType: p9.WriteLock}, linux.EBADF},
		{"getlock unopened", &proto.Tgetlock{FID: 2, LockType: p9.WriteLock}, linux.EBADF},
		// Open rules.
		{"open twice", &proto.Tlopen{FID: 3, Flags: p9.ReadOnly}, linux.EINVAL},
		{"open a directory for writing", &proto.Tlopen{FID: 1, Flags: p9.ReadWrite}, linux.EISDIR},
		{"open with access mode 3", &proto.Tlopen{FID: 2, Flags: 3}, linux.EINVAL},
		// Directory operations need a directory fid.
		{"mkdir in a file", &proto.Tmkdir{DirFID: 2, Name: "x"}, linux.ENOTDIR},
		{"create in a file", &proto.Tlcreate{FID: 2, Name: "x"}, linux.ENOTDIR},
		{"create in an open dir", &proto.Tlcreate{FID: 4, Name: "x"}, linux.EINVAL},
		{"create named ..", &proto.Tlcreate{FID: 1, Name: ".."}, linux.EINVAL},
		{"unlinkat bad flag", &proto.Tunlinkat{DirFID: 1, Name: "f", Flags: 1}, linux.EINVAL},
		{"renameat to a/b", &proto.Trenameat{OldDirFID: 1, OldName: "f", NewDirFID: 1, NewName: "a/b"}, linux.EINVAL},
		// Locks: a type above unlock is EINVAL.
		{"lock bad type", &proto.Tlock{FID: 3, LockType: 9}, linux.EINVAL},
		// Read count past msize is EINVAL (p9's server panics).
		{"read past msize", &proto.Tread{FID: 3, Count: 8193}, linux.EINVAL},
	}
	for _, tc := range tests {
		if got := c.errno(tc.msg); got != tc.want {
			t.Errorf("%s: errno %v, want %v", tc.name, got, tc.want)
		}
	}
	// The fid limit: 5 fids held, 8 allowed; the ninth walk is EMFILE.
	for id := proto.FID(20); id < 23; id++ {
		c.walk(1, id)
	}
	if got := c.errno(&proto.Twalk{FID: 1, NewFID: 30}); got != linux.EMFILE {
		t.Errorf("walk past the fid limit: %v, want EMFILE", got)
	}
	if got := c.errno(&proto.Tattach{FID: 30, Afid: proto.NoFID}); got != linux.EMFILE {
		t.Errorf("attach past the fid limit: %v, want EMFILE", got)
	}
	// Clunk frees a slot.
	c.call(&proto.Tclunk{FID: 20})
	c.walk(1, 30)
}

// TestPartialWalk proves a walk that fails after its first name answers the
// QIDs walked and creates no fid, whether or not the File reports them; a
// failure at the first name is an error.
func TestPartialWalk(t *testing.T) {
	for _, partial := range []bool{false, true} {
		fs := newTestFS(t)
		fs.partialWalk = partial
		if err := os.MkdirAll(fs.path("a/b"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, addr := serve(t, fs)
		c := versioned(t, addr, 8192)
		c.attach(1)
		rw := c.call(&proto.Twalk{FID: 1, NewFID: 2, Names: []string{"a", "b", "c", "d"}}).(*proto.Rwalk)
		if len(rw.QIDs) != 2 || rw.QIDs[1].Type != p9.TypeDir {
			t.Fatalf("partial=%v: Rwalk %v, want 2 QIDs", partial, rw.QIDs)
		}
		if got := c.errno(&proto.Tgetattr{FID: 2}); got != linux.EBADF {
			t.Fatalf("partial=%v: newfid exists after a partial walk (%v)", partial, got)
		}
		if got := c.errno(&proto.Twalk{FID: 1, NewFID: 2, Names: []string{"x", "y"}}); got != linux.ENOENT {
			t.Fatalf("partial=%v: walk failing at the first name: %v, want ENOENT", partial, got)
		}
	}
}

// TestXattrs covers Txattrwalk/Txattrcreate as Linux uses them: set, get,
// list, set empty, remove (size 0 + XATTR_REPLACE), and error pass-through.
func TestXattrs(t *testing.T) {
	fs := newTestFS(t)
	if err := os.WriteFile(fs.path("f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, addr := serve(t, fs)
	c := versioned(t, addr, 8192)
	c.attach(1)
	c.walk(1, 2, "f")

	set := func(name string, value []byte, flags uint32) linux.Errno {
		c.walk(2, 3)
		c.call(&proto.Txattrcreate{FID: 3, Name: name, Size: uint64(len(value)), Flags: flags})
		for off := 0; off < len(value); off += 100 {
			end := min(off+100, len(value))
			if w := c.call(&proto.Twrite{FID: 3, Offset: uint64(off), Data: value[off:end]}).(*proto.Rwrite); int(w.Count) != end-off {
				t.Fatalf("xattr write %d bytes, wrote %d", end-off, w.Count)
			}
		}
		return c.errno(&proto.Tclunk{FID: 3})
	}
	get := func(name string) ([]byte, linux.Errno) {
		r := c.rpc(1, &proto.Txattrwalk{FID: 2, NewFID: 4, Name: name})
		if e, ok := r.(*proto.Rlerror); ok {
			return nil, linux.Errno(e.Ecode)
		}
		size := r.(*proto.Rxattrwalk).Size
		var out []byte
		for uint64(len(out)) < size {
			rr := c.call(&proto.Tread{FID: 4, Offset: uint64(len(out)), Count: 100}).(*proto.Rread)
			if len(rr.Data) == 0 {
				break
			}
			out = append(out, rr.Data...)
		}
		c.call(&proto.Tclunk{FID: 4})
		return out, 0
	}

	value := bytes.Repeat([]byte("v"), 250)
	if e := set("user.a", value, 0); e != 0 {
		t.Fatalf("set user.a: %v", e)
	}
	if got, e := get("user.a"); e != 0 || !bytes.Equal(got, value) {
		t.Fatalf("get user.a = %q, %v", got, e)
	}
	if e := set("user.empty", nil, 0); e != 0 {
		t.Fatalf("set empty value: %v", e)
	}
	if got, e := get("user.empty"); e != 0 || len(got) != 0 {
		t.Fatalf("get user.empty = %q, %v", got, e)
	}
	if got, e := get(""); e != 0 || string(got) != "user.a\x00user.empty\x00" {
		t.Fatalf("list = %q, %v", got, e)
	}
	// XATTR_CREATE on an existing name: the File's EEXIST comes back at clunk.
	if e := set("user.a", []byte("x"), xattrCreate); e != linux.EEXIST {
		t.Fatalf("create existing: %v, want EEXIST", e)
	}
	// removexattr(2): size 0 with XATTR_REPLACE.
	if e := set("user.a", nil, xattrReplace); e != 0 {
		t.Fatalf("remove: %v", e)
	}
	if _, e := get("user.a"); e != linux.ENODATA {
		t.Fatalf("get removed attribute: %v, want ENODATA (p9 says EINVAL)", e)
	}
	// The File's EOPNOTSUPP passes through too.
	fs.setHook("GetXattr", func(*testFile) error { return linux.EOPNOTSUPP })
	if _, e := get("trusted.x"); e != linux.EOPNOTSUPP {
		t.Fatalf("get unsupported: %v, want EOPNOTSUPP", e)
	}

	// Misuse of xattr fids.
	c.walk(2, 3)
	c.call(&proto.Txattrcreate{FID: 3, Name: "user.b", Size: 4})
	tests := []struct {
		name string
		msg  proto.Message
		want linux.Errno
	}{
		// Writes must be in order.
		{"write at a gap", &proto.Twrite{FID: 3, Offset: 2, Data: []byte("x")}, linux.EINVAL},
		// Writes cannot exceed the announced size.
		{"write past size", &proto.Twrite{FID: 3, Data: []byte("12345")}, linux.ENOSPC},
		// An xattr fid names no File.
		{"getattr on xattr fid", &proto.Tgetattr{FID: 3}, linux.EBADF},
		{"read on xattr-write fid", &proto.Tread{FID: 3, Count: 4}, linux.EBADF},
		// Values beyond XATTR_SIZE_MAX are E2BIG.
		{"huge create", &proto.Txattrcreate{FID: 2, Name: "user.c", Size: 1 << 20}, linux.E2BIG},
		// Only XATTR_CREATE and XATTR_REPLACE are flags.
		{"bad flags", &proto.Txattrcreate{FID: 2, Name: "user.c", Flags: 4}, linux.EINVAL},
		// A name is required.
		{"empty name", &proto.Txattrcreate{FID: 2, Name: ""}, linux.EINVAL},
	}
	for _, tc := range tests {
		if got := c.errno(tc.msg); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// A clunk before the announced size was written fails and stores nothing.
	c.call(&proto.Twrite{FID: 3, Data: []byte("ab")})
	if got := c.errno(&proto.Tclunk{FID: 3}); got != linux.EINVAL {
		t.Fatalf("short clunk: %v, want EINVAL", got)
	}
	fs.setHook("GetXattr", nil)
	if _, e := get("user.b"); e != linux.ENODATA {
		t.Fatalf("short value was stored (%v)", e)
	}
	if st := s.Stats(); st.Fids != 2 {
		t.Fatalf("fids held %d, want 2", st.Fids)
	}
}

// TestLocks covers Tlock and Tgetlock on an open fid.
func TestLocks(t *testing.T) {
	fs := newTestFS(t)
	if err := os.WriteFile(fs.path("f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, addr := serve(t, fs)
	c := versioned(t, addr, 8192)
	c.attach(1)
	c.walk(1, 2, "f")
	c.call(&proto.Tlopen{FID: 2, Flags: p9.ReadWrite})
	if r := c.call(&proto.Tlock{FID: 2, LockType: p9.WriteLock, Start: 0, Length: 10, ProcID: 1, ClientID: "g"}).(*proto.Rlock); r.Status != p9.LockStatusOK {
		t.Fatalf("Rlock %v", r.Status)
	}
	r := c.call(&proto.Tgetlock{FID: 2, LockType: p9.WriteLock, Start: 3, Length: 4, ProcID: 7, ClientID: "g"}).(*proto.Rgetlock)
	if r.LockType != p9.Unlock || r.Start != 3 || r.Length != 4 || r.ProcID != 7 || r.ClientID != "g" {
		t.Fatalf("Rgetlock %+v", r)
	}
	if fs.called("Lock") != 1 || fs.called("GetLock") != 1 {
		t.Fatalf("File saw %d Lock, %d GetLock calls", fs.called("Lock"), fs.called("GetLock"))
	}
}

// TestReaddirFitsCount proves Rreaddir stops at the entry that would not
// fit, and continuing at the last offset returns every entry exactly once.
func TestReaddirFitsCount(t *testing.T) {
	fs := newTestFS(t)
	want := map[string]bool{}
	for i := 0; i < 300; i++ {
		name := filepath.Base(filepath.Join("x", string(rune('a'+i%26))+string(rune('a'+i/26))+"-entry"))
		want[name] = true
		if err := os.WriteFile(fs.path(name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, addr := serve(t, fs)
	c := versioned(t, addr, 4096)
	c.attach(1)
	c.walk(1, 2)
	c.call(&proto.Tlopen{FID: 2, Flags: p9.ReadOnly})
	seen := map[string]bool{}
	var off uint64
	for {
		rd := c.call(&proto.Treaddir{FID: 2, Offset: off, Count: 1 << 20}).(*proto.Rreaddir)
		if len(rd.Entries) == 0 {
			break
		}
		size := 0
		for _, e := range rd.Entries {
			if seen[e.Name] {
				t.Fatalf("%q returned twice", e.Name)
			}
			seen[e.Name] = true
			size += proto.DirentSize(e.Name)
			off = e.Offset
		}
		if proto.IOHeaderSize+size > 4096 {
			t.Fatalf("Rreaddir of %d bytes at msize 4096", proto.IOHeaderSize+size)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("saw %d entries, want %d", len(seen), len(want))
	}
	// A count too small for one entry is EINVAL, never an empty (EOF) reply.
	if got := c.errno(&proto.Treaddir{FID: 2, Offset: 0, Count: 10}); got != linux.EINVAL {
		t.Fatalf("tiny count: %v, want EINVAL", got)
	}
}
