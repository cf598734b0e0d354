package launcher

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/fsd-launcher/fsd-launcher/readiness"
)

// goferWait bounds waits that should end quickly; it only keeps a broken
// test from hanging.
const goferWait = 30 * time.Second

// goferBundle writes a bundle: rootfs/ with a marker, a read-write bind
// "data", a read-only bind "conf", and a proc mount (not served).
func goferBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"rootfs", "data", "conf"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "marker"), []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := `{"root":{"path":"rootfs"},"mounts":[
		{"destination":"/proc","type":"proc","source":"proc"},
		{"destination":"/data","type":"bind","source":"data","options":["rbind"]},
		{"destination":"/conf","type":"bind","source":"conf","options":["rbind","ro"]}]}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// socketInodes lists the sockets this process holds, by inode.
func socketInodes(t *testing.T) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			out[l] = true
		}
	}
	return out
}

// newSockets returns how many sockets this process holds that it did not
// hold before.
func newSockets(t *testing.T, before map[string]bool) int {
	n := 0
	for s := range socketInodes(t) {
		if !before[s] {
			n++
		}
	}
	return n
}

// p9Client makes a 9P client of a sandbox end.
func p9Client(t *testing.T, f *os.File) *p9.Client {
	t.Helper()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	cl, err := p9.NewClient(c)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	return cl
}

// TestStartGofer runs the real fsd-launcher binary (built once, here) as
// a gofer.
func TestStartGofer(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fsd-launcher")
	build := exec.Command("go", "build", "-o", bin, "../cmd/fsd-launcher")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fsd-launcher: %v\n%s", err, out)
	}
	ctx := context.Background()

	t.Run("serves every export and exits when they close", func(t *testing.T) {
		dir := goferBundle(t)
		before := socketInodes(t)
		d, ends, err := StartGofer(ctx, dir, WithExecutable(bin))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Stop(ctx) })
		if d.SocketPath() != "" {
			t.Errorf("gofer has socket path %q", d.SocketPath())
		}
		// The root, /data, /conf: /proc is not served.
		if len(ends) != 3 {
			t.Fatalf("%d sandbox ends, want 3", len(ends))
		}
		// The parent holds the sandbox ends and nothing else: the gofer ends
		// were closed after the start.
		if n := newSockets(t, before); n != len(ends) {
			t.Errorf("launcher holds %d new sockets, want the %d sandbox ends", n, len(ends))
		}
		for i, tc := range []struct {
			marker string
			ro     bool
		}{{"rootfs", false}, {"data", false}, {"conf", true}} {
			cl := p9Client(t, ends[i])
			root, err := cl.Attach("")
			if err != nil {
				t.Fatalf("attach on end %d: %v", i, err)
			}
			_, f, err := root.Walk([]string{"marker"})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := f.Open(p9.ReadOnly); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			n, err := f.ReadAt(buf, 0)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if string(buf[:n]) != tc.marker {
				t.Errorf("end %d serves %q, want %q", i, buf[:n], tc.marker)
			}
			f.Close()
			_, dirf, err := root.Walk(nil)
			if err != nil {
				t.Fatal(err)
			}
			nf, _, _, err := dirf.Create("new", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
			if tc.ro {
				if !errors.Is(err, linux.EROFS) {
					t.Errorf("create on read-only end %d: %v, want EROFS", i, err)
				}
			} else if err != nil {
				t.Errorf("create on end %d: %v", i, err)
			} else {
				nf.Close()
			}
			dirf.Close()
			root.Close()
			cl.Close()
		}
		// Every sandbox end is closed: the gofer exits 0 by itself.
		select {
		case <-d.Done():
		case <-time.After(goferWait):
			t.Fatal("gofer still running after every connection closed")
		}
		if err := d.Wait(); err != nil {
			t.Errorf("gofer exit: %v", err)
		}
		for _, p := range []string{"rootfs/new", "data/new"} {
			if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
				t.Errorf("file created through 9P: %v", err)
			}
		}
	})

	t.Run("stop", func(t *testing.T) {
		d, ends, err := StartGofer(ctx, goferBundle(t), WithExecutable(bin))
		if err != nil {
			t.Fatal(err)
		}
		// SIGTERM: the gofer closes its connections and exits 0.
		if err := d.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if err := d.Wait(); err != nil {
			t.Errorf("gofer exit after SIGTERM: %v", err)
		}
		for i, f := range ends {
			f.SetReadDeadline(time.Now().Add(goferWait))
			if _, err := f.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("sandbox end %d after Stop: %v, want EOF", i, err)
			}
			f.Close()
		}
	})
}

// TestStartGoferErrors covers the failures before and at the start.
func TestStartGoferErrors(t *testing.T) {
	ctx := context.Background()

	t.Run("bad bundle", func(t *testing.T) {
		before := socketInodes(t)
		_, ends, err := StartGofer(ctx, t.TempDir(), WithExecutable("/bin/true"))
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "config.json") {
			t.Fatalf("StartGofer without config.json: %v", err)
		}
		if ends != nil || newSockets(t, before) != 0 {
			t.Error("sockets left behind")
		}
	})

	t.Run("never ready", func(t *testing.T) {
		// A daemon that exits at once without the readiness line: a
		// StartError, every socket end closed.
		before := socketInodes(t)
		_, ends, err := StartGofer(ctx, goferBundle(t), WithExecutable("/bin/true"))
		var se *StartError
		if !errors.As(err, &se) || !errors.Is(err, readiness.ErrExited) {
			t.Fatalf("StartGofer with /bin/true: %v", err)
		}
		// The daemon was reaped: it is not our child any more, not even a
		// zombie.
		if ps, err := readProcStat(se.PID); err == nil && ps.PPID == os.Getpid() {
			t.Errorf("pid %d still our child, state %c", se.PID, ps.State)
		}
		if ends != nil || newSockets(t, before) != 0 {
			t.Error("sockets left behind")
		}
	})

	t.Run("detached refused", func(t *testing.T) {
		if _, _, err := StartGofer(ctx, goferBundle(t), WithExecutable("/bin/true"), Detached()); !errors.Is(err, ErrGoferDetached) {
			t.Fatalf("StartGofer detached: %v", err)
		}
	})
}
