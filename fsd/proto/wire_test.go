package proto

import (
	"io"
	"net"
	"os"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
)

// wirePeer is the server end of a socketpair whose client end p9's client
// drives: it decodes what p9 sends with this package and answers with frames
// this package encodes, so one exchange checks both directions against p9's
// own codec.
type wirePeer struct {
	t    *testing.T
	conn net.Conn
}

func socketpair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		conns[i] = c
	}
	t.Cleanup(func() { conns[0].Close(); conns[1].Close() })
	return conns[0], conns[1]
}

// next reads and decodes one frame.
func (p *wirePeer) next() (Tag, Message) {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, HeaderSize)
	if _, err := io.ReadFull(p.conn, hdr); err != nil {
		p.t.Fatalf("read header: %v", err)
	}
	h, err := ParseHeader(hdr)
	if err != nil {
		p.t.Fatalf("header: %v", err)
	}
	f := make([]byte, h.Size)
	copy(f, hdr)
	if _, err := io.ReadFull(p.conn, f[HeaderSize:]); err != nil {
		p.t.Fatalf("read body: %v", err)
	}
	tag, m, err := Decode(f)
	if err != nil {
		p.t.Fatalf("decode what p9's client sent (% x): %v", f, err)
	}
	return tag, m
}

func (p *wirePeer) reply(tag Tag, m Message) {
	p.t.Helper()
	b, err := Append(nil, tag, m)
	if err != nil {
		p.t.Fatalf("encode %v: %v", m.Type(), err)
	}
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatalf("write %v: %v", m.Type(), err)
	}
}

// exchange runs op (a p9 client call) while the peer expects one request
// equal to want and answers it with r.
func (p *wirePeer) exchange(op func() error, want Message, r Message) error {
	p.t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	tag, got := p.next()
	if !reflect.DeepEqual(got, want) {
		p.t.Errorf("p9's client sent\n %#v\nwant\n %#v", got, want)
	}
	p.reply(tag, r)
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		p.t.Fatalf("p9 client call did not return after %v", r.Type())
		return nil
	}
}

// TestP9ClientWire decodes every request p9's client can send and answers it
// with this package's encoding, checking the decoded fields against what the
// client was asked to do and the client's results against what was sent.
func TestP9ClientWire(t *testing.T) {
	srv, cli := socketpair(t)
	p := &wirePeer{t: t, conn: srv}

	// Version: p9's client asks for its highest Google version and accepts
	// a plain 9P2000.L answer.
	var client *p9.Client
	done := make(chan error, 1)
	go func() {
		var err error
		client, err = p9.NewClient(cli, p9.WithMessageSize(8192))
		done <- err
	}()
	tag, m := p.next()
	if want := (&Tversion{Msize: 8192, Version: "9P2000.L.Google.7"}); !reflect.DeepEqual(m, want) {
		t.Fatalf("Tversion = %#v, want %#v", m, want)
	}
	p.reply(tag, &Rversion{Msize: 8192, Version: Version})
	if err := <-done; err != nil {
		t.Fatalf("NewClient: %v", err)
	}

	var root, f p9.File
	const rootFID, fileFID = FID(1), FID(2)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(p.exchange(func() (err error) { root, err = client.Attach("data"); return },
		&Tattach{FID: rootFID, Afid: NoFID, Aname: "data", NUname: p9.NoUID}, &Rattach{QID: qidDir}))

	var qids []p9.QID
	must(p.exchange(func() (err error) { qids, f, err = root.Walk([]string{"a", "b"}); return },
		&Twalk{FID: rootFID, NewFID: fileFID, Names: []string{"a", "b"}}, &Rwalk{QIDs: []p9.QID{qidDir, qidFile}}))
	if !reflect.DeepEqual(qids, []p9.QID{qidDir, qidFile}) {
		t.Errorf("client decoded Rwalk QIDs %v", qids)
	}

	var qid p9.QID
	var iounit uint32
	must(p.exchange(func() (err error) { qid, iounit, err = f.Open(p9.ReadWrite); return },
		&Tlopen{FID: fileFID, Flags: p9.ReadWrite}, &Rlopen{QID: qidFile, IOUnit: 4096}))
	if qid != qidFile || iounit != 4096 {
		t.Errorf("client decoded Rlopen %v %d", qid, iounit)
	}

	buf := make([]byte, 100)
	var n int
	must(p.exchange(func() (err error) { n, err = f.ReadAt(buf, 7); return },
		&Tread{FID: fileFID, Offset: 7, Count: 100}, &Rread{Data: []byte("abc")}))
	if string(buf[:n]) != "abc" {
		t.Errorf("client decoded Rread %q", buf[:n])
	}

	must(p.exchange(func() (err error) { n, err = f.WriteAt([]byte("xyz"), 9); return },
		&Twrite{FID: fileFID, Offset: 9, Data: []byte("xyz")}, &Rwrite{Count: 3}))
	if n != 3 {
		t.Errorf("client decoded Rwrite %d", n)
	}

	var valid p9.AttrMask
	var attr p9.Attr
	must(p.exchange(func() (err error) { qid, valid, attr, err = f.GetAttr(p9.AttrMaskAll); return },
		&Tgetattr{FID: fileFID, Mask: p9.AttrMaskAll}, &Rgetattr{Valid: p9.AttrMaskAll, QID: qidFile, Attr: allAttr}))
	if qid != qidFile || valid != p9.AttrMaskAll || attr != allAttr {
		t.Errorf("client decoded Rgetattr %v %v %v", qid, valid, attr)
	}

	setMask := p9.SetAttrMask{Permissions: true, Size: true}
	must(p.exchange(func() error { return f.SetAttr(setMask, p9.SetAttr{Permissions: 0o644, Size: 5}) },
		&Tsetattr{FID: fileFID, Valid: setMask, Attr: p9.SetAttr{Permissions: 0o644, Size: 5}}, &Rsetattr{}))

	// p9's client sends Tfsync without the datasync field.
	must(p.exchange(func() error { return f.FSync() }, &Tfsync{FID: fileFID}, &Rfsync{}))

	var st p9.FSStat
	wantStat := p9.FSStat{Type: 1, BlockSize: 2, Blocks: 3, BlocksFree: 4, BlocksAvailable: 5, Files: 6, FilesFree: 7, FSID: 8, NameLength: 9}
	must(p.exchange(func() (err error) { st, err = root.StatFS(); return }, &Tstatfs{FID: rootFID}, &Rstatfs{Stat: wantStat}))
	if st != wantStat {
		t.Errorf("client decoded Rstatfs %v", st)
	}

	ents := []p9.Dirent{{QID: qidDir, Offset: 1, Type: p9.TypeDir, Name: "sub"}, {QID: qidFile, Offset: 2, Type: p9.TypeRegular, Name: "file"}}
	var dents p9.Dirents
	must(p.exchange(func() (err error) { dents, err = f.Readdir(3, 4000); return },
		&Treaddir{FID: fileFID, Offset: 3, Count: 4000}, &Rreaddir{Entries: ents}))
	if !reflect.DeepEqual([]p9.Dirent(dents), ents) {
		t.Errorf("client decoded Rreaddir %v", dents)
	}

	must(p.exchange(func() (err error) { qid, err = root.Mkdir("d", 0o755, 1, 2); return },
		&Tmkdir{DirFID: rootFID, Name: "d", Mode: 0o755, GID: p9.NoGID}, &Rmkdir{QID: qidDir}))
	must(p.exchange(func() (err error) { qid, err = root.Symlink("target", "ln", 1, 2); return },
		&Tsymlink{FID: rootFID, Name: "ln", Target: "target", GID: p9.NoGID}, &Rsymlink{QID: qidFile}))
	must(p.exchange(func() (err error) { qid, err = root.Mknod("nod", p9.ModeNamedPipe|0o600, 3, 4, 1, 2); return },
		&Tmknod{DirFID: rootFID, Name: "nod", Mode: p9.ModeNamedPipe | 0o600, Major: 3, Minor: 4, GID: p9.NoGID}, &Rmknod{QID: qidFile}))
	must(p.exchange(func() error { return root.Link(f, "hard") },
		&Tlink{DirFID: rootFID, FID: fileFID, Name: "hard"}, &Rlink{}))
	must(p.exchange(func() error { return f.Rename(root, "moved") },
		&Trename{FID: fileFID, DirFID: rootFID, Name: "moved"}, &Rrename{}))
	must(p.exchange(func() error { return root.RenameAt("x", root, "y") },
		&Trenameat{OldDirFID: rootFID, OldName: "x", NewDirFID: rootFID, NewName: "y"}, &Rrenameat{}))
	must(p.exchange(func() error { return root.UnlinkAt("d", 0x200) },
		&Tunlinkat{DirFID: rootFID, Name: "d", Flags: 0x200}, &Runlinkat{}))

	var target string
	must(p.exchange(func() (err error) { target, err = f.Readlink(); return },
		&Treadlink{FID: fileFID}, &Rreadlink{Target: "/t"}))
	if target != "/t" {
		t.Errorf("client decoded Rreadlink %q", target)
	}

	// p9's client leaves Tlock's fid at zero: decode what it really sends.
	var status p9.LockStatus
	must(p.exchange(func() (err error) { status, err = f.Lock(77, p9.WriteLock, p9.LockFlagsBlock, 1, 2, "me"); return },
		&Tlock{FID: 0, LockType: p9.WriteLock, Flags: p9.LockFlagsBlock, Start: 1, Length: 2, ProcID: 77, ClientID: "me"}, &Rlock{Status: p9.LockStatusOK}))
	if status != p9.LockStatusOK {
		t.Errorf("client decoded Rlock %v", status)
	}

	// An Rlerror reaches the client as that errno.
	err := p.exchange(func() error { _, _, err := root.Walk([]string{"missing"}); return err },
		&Twalk{FID: rootFID, NewFID: 3, Names: []string{"missing"}}, &Rlerror{Ecode: uint32(linux.ENOENT)})
	if err != linux.ENOENT {
		t.Errorf("client decoded Rlerror as %v, want ENOENT", err)
	}

	// Tlcreate goes on a clone: the clone's walk, then the create.
	var clone p9.File
	must(p.exchange(func() (err error) { _, clone, err = root.Walk(nil); return },
		&Twalk{FID: rootFID, NewFID: 3}, &Rwalk{}))
	must(p.exchange(func() (err error) { _, _, _, err = clone.Create("new", p9.WriteOnly, 0o640, 1, 2); return },
		&Tlcreate{FID: 3, Name: "new", Flags: p9.WriteOnly, Mode: 0o640, GID: p9.NoGID}, &Rlcreate{QID: qidFile}))

	must(p.exchange(func() error { return f.Close() }, &Tclunk{FID: fileFID}, &Rclunk{}))
	remover, ok := clone.(interface{ Remove() error })
	if !ok {
		t.Fatalf("p9's client file has no Remove")
	}
	must(p.exchange(remover.Remove, &Tremove{FID: 3}, &Rremove{}))
}
