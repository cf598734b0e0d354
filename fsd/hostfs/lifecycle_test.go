package hostfs

import (
	"fmt"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// workload exercises every kind of File, fd and fallback once.
func workload(t *testing.T, root p9.File, i int) {
	t.Helper()
	name := fmt.Sprintf("w%d", i)
	f, _, _, err := root.Create(name, p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	must(t, err)
	_, err = f.WriteAt([]byte("data"), 0)
	must(t, err)
	must(t, f.SetXattr("user.w", []byte("v"), 0))
	_, err = f.Lock(1, p9.WriteLock, 0, 0, 0, "c")
	must(t, err)
	must(t, f.Close())

	g := walkTo(t, root, name)
	_, err = g.GetXattr("user.w")
	must(t, err)
	_, err = g.ListXattrs()
	must(t, err)
	must(t, g.SetAttr(p9.SetAttrMask{Size: true, MTime: true, Permissions: true}, p9.SetAttr{Size: 1, Permissions: 0o600}))
	_, _, err = g.Open(p9.ReadOnly)
	must(t, err)
	_, err = g.ReadAt(make([]byte, 4), 0)
	must(t, err)

	_, err = root.Mkdir(name+"d", 0o755, p9.NoUID, p9.NoGID)
	must(t, err)
	_, err = root.Symlink(name, name+"l", p9.NoUID, p9.NoGID)
	must(t, err)
	must(t, root.Link(walkTo(t, root, name+"l"), name+"h"))
	_, err = root.Mknod(name+"p", p9.ModeNamedPipe|0o600, 0, 0, p9.NoUID, p9.NoGID)
	must(t, err)
	d := openDirFile(t, root, name+"d")
	_, err = d.Readdir(0, 100)
	must(t, err)
	_, wf, _, _, err := root.WalkGetAttr([]string{"dir", "sub.txt"})
	must(t, err)
	must(t, wf.Close())
	l := walkTo(t, root, name+"l")
	must(t, l.SetAttr(p9.SetAttrMask{MTime: true}, p9.SetAttr{}))
	_, err = l.Readlink()
	must(t, err)
	must(t, root.RenameAt(name+"h", root, name+"h2"))
	must(t, walkTo(t, root, name+"h2").Remove())
	must(t, root.UnlinkAt(name+"p", 0))
	_, _, _, err = root.Create(name, p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	wantErr(t, err, linux.EEXIST, "create again")
}

// TestNoFDLeak runs a large workload, directly and through p9's server
// over a real socket, and checks every fd is closed at the end.
func TestNoFDLeak(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		// Warm up what the runtime opens once (netpoll, /proc/self/fd).
		warm := newTree(t)
		_, wr := attach(t, warm.root, opts...)
		workload(t, wr, 0)
		ln, err := net.Listen("unix", t.TempDir()+"/s")
		must(t, err)
		ln.Close()

		before := countFDs(t)
		t.Run("direct", func(t *testing.T) {
			tr := newTree(t)
			_, root := attach(t, tr.root, opts...)
			for i := range 50 {
				workload(t, root, i)
			}
		})
		t.Run("through-p9", func(t *testing.T) {
			tr := newTree(t)
			sock := p9Target(opts...)(t, tr.root, nil)
			for range 3 {
				conn, err := net.Dial("unix", sock)
				must(t, err)
				c, err := p9.NewClient(conn)
				must(t, err)
				root, err := c.Attach("")
				must(t, err)
				for i := range 100 {
					_, f, err := root.Walk([]string{"dir", "sub.txt"})
					must(t, err)
					_, _, err = f.Open(p9.ReadOnly)
					must(t, err)
					_, err = f.ReadAt(make([]byte, 3), 0)
					must(t, err)
					must(t, f.Close())
					_, d, err := root.Walk(nil)
					must(t, err)
					nf, _, _, err := d.Create(fmt.Sprintf("c%d", i), p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
					must(t, err)
					must(t, nf.Close())
					must(t, root.UnlinkAt(fmt.Sprintf("c%d", i), 0))
				}
				must(t, c.Close())
			}
		})
		if after := countFDs(t); after != before {
			t.Errorf("fds: %d before, %d after", before, after)
		}
	})
}

// TestCloseSemantics: Close is idempotent (EBADF the second time), later
// calls fail with EBADF, and clones and children outlive their source.
func TestCloseSemantics(t *testing.T) {
	tr := newTree(t)
	_, root := attach(t, tr.root)
	before := countFDs(t)
	_, f, err := root.Walk([]string{"dir"})
	must(t, err)
	_, clone, err := f.Walk(nil)
	must(t, err)
	_, child, err := f.Walk([]string{"sub.txt"})
	must(t, err)
	must(t, f.Close())
	wantErr(t, f.Close(), linux.EBADF, "second close")
	_, _, _, err = f.GetAttr(p9.AttrMaskAll)
	wantErr(t, err, linux.EBADF, "getattr after close")
	_, _, err = f.Walk(nil)
	wantErr(t, err, linux.EBADF, "walk after close")
	_, _, err = f.Open(p9.ReadOnly)
	wantErr(t, err, linux.EBADF, "open after close")
	_, _, _, err = clone.GetAttr(p9.AttrMaskAll)
	must(t, err)
	must(t, child.(*file).Remove())
	must(t, clone.Close())
	must(t, child.Close())
	if after := countFDs(t); after != before {
		t.Errorf("fds: %d before, %d after", before, after)
	}
}

// TestConcurrentUse hammers one File and its clones from many goroutines
// while another closes them (run with -race): calls either work or answer
// EBADF, and no fd is left behind.
func TestConcurrentUse(t *testing.T) {
	forVariants(t, func(t *testing.T, opts []Option) {
		tr := newTree(t)
		must(t, os.WriteFile(tr.path("dir/data"), make([]byte, 64<<10), 0o644))
		_, root := attach(t, tr.root, opts...)
		before := countFDs(t)
		for round := range 20 {
			_, f, err := root.Walk([]string{"dir", "data"})
			must(t, err)
			_, _, err = f.Open(p9.ReadWrite)
			must(t, err)
			_, d, err := root.Walk([]string{"dir"})
			must(t, err)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 4096)
					for i := range 50 {
						ok := func(err error) {
							if err != nil && err != linux.EBADF {
								t.Errorf("goroutine %d: %v", g, err)
							}
						}
						_, err := f.ReadAt(buf, int64(i*100))
						ok(err)
						_, err = f.WriteAt(buf[:10], int64(g*1000))
						ok(err)
						_, _, _, err = f.GetAttr(p9.AttrMaskAll)
						ok(err)
						if _, c, err := f.Walk(nil); err == nil {
							c.Close()
						} else {
							ok(err)
						}
						_, err = f.Lock(1, p9.ReadLock, 0, uint64(g), 1, "c")
						ok(err)
						ok(f.SetXattr(fmt.Sprintf("user.g%d", g), []byte("v"), 0))
						if _, c, err := d.Walk([]string{"data"}); err == nil {
							c.Close()
						}
						name := fmt.Sprintf("r%d-%d-%d", round, g, i)
						if nf, _, _, err := d.Create(name, p9.WriteOnly, 0o600, p9.NoUID, p9.NoGID); err == nil {
							nf.Close()
							d.UnlinkAt(name, 0)
						}
					}
				}()
			}
			// Close while the calls run.
			f.Close()
			wg.Wait()
			d.Close()
		}
		if after := countFDs(t); after != before {
			t.Errorf("fds: %d before, %d after", before, after)
		}
	})
}

// TestCloseWhileInFlight: a Close during a call does not release the fds
// under it; the call's end does, exactly once.
func TestCloseWhileInFlight(t *testing.T) {
	tr := newTree(t)
	_, root := attach(t, tr.root)
	before := countFDs(t)
	_, g, err := root.Walk([]string{"file.txt"})
	must(t, err)
	f := g.(*file)
	_, _, err = f.Open(p9.ReadOnly)
	must(t, err)
	must(t, f.enter()) // a call in flight
	must(t, f.Close())
	if n := countFDs(t); n != before+2 {
		t.Errorf("fds released under a call in flight: %d, want %d", n, before+2)
	}
	// The call in flight still works on intact fds.
	if _, err := unix.Pread(f.open.Load().fd, make([]byte, 5), 0); err != nil {
		t.Errorf("pread in flight: %v", err)
	}
	_, _, _, err = f.GetAttr(p9.AttrMaskAll)
	wantErr(t, err, linux.EBADF, "new call after close")
	f.exit()
	if n := countFDs(t); n != before {
		t.Errorf("fds after the last call: %d, want %d", n, before)
	}
	wantErr(t, f.Close(), linux.EBADF, "close again")
}

// TestUndoCreate: a failed create removes its name only if the name still
// names the inode it made.
func TestUndoCreate(t *testing.T) {
	tr := newTree(t)
	fs, root := attach(t, tr.root)
	for _, row := range []struct {
		name     string
		replace  bool // the name was replaced after the create
		wantGone bool
	}{
		{"still-ours", false, true}, // removed
		{"replaced", true, false},   // someone else's file now: kept
	} {
		t.Run(row.name, func(t *testing.T) {
			must(t, os.WriteFile(tr.path(row.name), nil, 0o644))
			made := lstatT(t, tr.path(row.name))
			if row.replace {
				// Keep the made inode alive so its number is not reused.
				must(t, os.Rename(tr.path(row.name), tr.path(row.name+".orig")))
				must(t, os.WriteFile(tr.path(row.name), []byte("other"), 0o644))
			}
			fs.undoCreate(root.n, row.name, &made, 0)
			_, err := os.Lstat(tr.path(row.name))
			if gone := os.IsNotExist(err); gone != row.wantGone {
				t.Errorf("gone %v, want %v", gone, row.wantGone)
			}
		})
	}
}
