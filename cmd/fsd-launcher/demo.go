package main

import (
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"

	"github.com/hugelgupf/p9/p9"
	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/config"
	"github.com/fsd-launcher/fsd-launcher/launcher"
)

const demoHelp = `
The one-command demo. It extracts a small sample tree into a temporary
directory, starts the built-in daemon on it (launcher.Start, default
configuration, socket in the temporary directory), and then, as a guest
would, over 9P2000.L with a 9P client: lists the tree, reads a file,
follows a symlink, and writes a file that is then read on the host. Finally
it stops the daemon, checks that the socket and the process are gone, and
removes the temporary directory. Every step is printed; any failure exits 1.`

// demoTree is the sample tree (cmd/fsd-launcher/demo).
//
//go:embed demo
var demoTree embed.FS

// demoSymlinks are created after extraction: go:embed cannot hold a
// symlink (it refuses irregular files), so the sample tree's links live
// here.
var demoSymlinks = []struct{ name, target string }{
	{"latest", "notes/todo.txt"},
	{"notes/deep/up", "../todo.txt"},
}

// demoWrite is the file the demo writes over 9P.
const (
	demoWriteName = "written-over-9p.txt"
	demoWriteText = "This file was created and written by the 9P client.\n"
)

func demoMain(args []string) int {
	fs := newFlagSet("demo", "[--log-level LEVEL]", demoHelp)
	level := fs.String("log-level", "warn", "log `level` of the launcher and the daemon: debug, info, warn or error")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runDemo(ctx, os.Stdout, *level); err != nil {
		return fail("demo", err)
	}
	return exitOK
}

// runDemo runs the demo, printing each step on w.
func runDemo(ctx context.Context, w io.Writer, level string) (err error) {
	step := func(format string, args ...any) { fmt.Fprintf(w, "==> "+format+"\n", args...) }

	tmp, err := os.MkdirTemp("", "fsd-demo-")
	if err != nil {
		return errors.Wrap(err, "create a temporary directory")
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil {
			if err == nil {
				err = errors.Wrapf(rerr, "remove %s", tmp)
			}
			return
		}
		step("removed %s", tmp)
	}()
	shared := filepath.Join(tmp, "shared")
	if err := extractDemo(shared); err != nil {
		return err
	}
	step("extracted the sample tree into %s", shared)

	cfg := config.Default(shared, filepath.Join(tmp, "run", "fsd.sock"))
	cfg.Log.Level = level
	if err := cfg.Validate(); err != nil {
		return err
	}
	d, err := launcher.Start(ctx, cfg, launcher.WithLogger(newLogger(cfg.Log)), launcher.WithVersion(versionString()))
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = d.Stop(context.Background())
		}
	}()
	step("started the built-in daemon: pid %d, socket %s", d.PID(), d.SocketPath())

	if err := demo9P(w, step, d.SocketPath(), shared); err != nil {
		return err
	}

	pid := d.PID()
	if err := d.Stop(ctx); err != nil {
		return errors.WithMessage(err, "stop the daemon")
	}
	stopped = true
	if _, err := os.Lstat(d.SocketPath()); !errors.Is(err, os.ErrNotExist) {
		return errors.Errorf("the socket %s is still there after stop (%v)", d.SocketPath(), err)
	}
	select {
	case <-d.Done():
	default:
		return errors.Errorf("daemon pid %d not reaped after stop", pid)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !errors.Is(err, os.ErrNotExist) {
		return errors.Errorf("pid %d still exists after stop", pid)
	}
	step("stopped the daemon: socket removed, pid %d gone", pid)
	return nil
}

// extractDemo writes the embedded sample tree to dir, then its symlinks.
func extractDemo(dir string) error {
	root, err := fs.Sub(demoTree, "demo")
	if err != nil {
		return errors.Wrap(err, "sample tree")
	}
	err = fs.WalkDir(root, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if e.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		return errors.Wrapf(err, "extract the sample tree into %s", dir)
	}
	for _, l := range demoSymlinks {
		if err := os.Symlink(l.target, filepath.Join(dir, filepath.FromSlash(l.name))); err != nil {
			return errors.Wrap(err, "create a sample symlink")
		}
	}
	return nil
}

// demo9P does the client's part: attach, list, read, readlink, write.
func demo9P(w io.Writer, step func(string, ...any), sock, shared string) error {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return errors.Wrapf(err, "connect to %s", sock)
	}
	defer conn.Close()
	client, err := p9.NewClient(conn)
	if err != nil {
		return errors.Wrap(err, "9P version exchange")
	}
	defer client.Close()
	root, err := client.Attach("")
	if err != nil {
		return errors.Wrap(err, "9P attach")
	}
	defer root.Close()
	step("connected over 9P2000.L and attached the root export (aname \"\")")

	step("the tree, listed over 9P:")
	if err := listTree(w, root, "/", 0); err != nil {
		return err
	}

	b, err := readFile9P(root, "hello.txt")
	if err != nil {
		return err
	}
	step("read /hello.txt over 9P (%d bytes):", len(b))
	fmt.Fprintf(w, "    | %s", indent(string(b)))

	target, err := readlink9P(root, "latest")
	if err != nil {
		return err
	}
	step("read the symlink /latest over 9P: -> %s", target)

	if err := writeFile9P(root, demoWriteName, []byte(demoWriteText)); err != nil {
		return err
	}
	host, err := os.ReadFile(filepath.Join(shared, demoWriteName))
	if err != nil {
		return errors.Wrap(err, "read the written file on the host")
	}
	if string(host) != demoWriteText {
		return errors.Errorf("the host sees %q, the client wrote %q", host, demoWriteText)
	}
	step("wrote /%s over 9P; on the host, %s holds:", demoWriteName, filepath.Join(shared, demoWriteName))
	fmt.Fprintf(w, "    | %s", indent(string(host)))
	return nil
}

// listTree prints the tree under dir (a directory fid), sorted by name.
func listTree(w io.Writer, dir p9.File, name string, depth int) error {
	if depth > 8 {
		return errors.Errorf("%s: tree deeper than the demo's", name)
	}
	_, d, err := dir.Walk(nil)
	if err != nil {
		return errors.Wrapf(err, "9P walk (clone) %s", name)
	}
	defer d.Close()
	if _, _, err := d.Open(p9.ReadOnly); err != nil {
		return errors.Wrapf(err, "9P open %s", name)
	}
	var ents []p9.Dirent
	var offset uint64
	for {
		batch, err := d.Readdir(offset, 64<<10)
		if err != nil {
			return errors.Wrapf(err, "9P readdir %s", name)
		}
		if len(batch) == 0 {
			break
		}
		for _, e := range batch {
			offset = e.Offset
			if e.Name != "." && e.Name != ".." {
				ents = append(ents, e)
			}
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	for _, e := range ents {
		p := path.Join(name, e.Name)
		_, f, err := dir.Walk([]string{e.Name})
		if err != nil {
			return errors.Wrapf(err, "9P walk %s", p)
		}
		switch {
		case e.QID.Type&p9.TypeDir != 0:
			fmt.Fprintf(w, "    %s/\n", p)
			err = listTree(w, f, p, depth+1)
		case e.QID.Type&p9.TypeSymlink != 0:
			var t string
			if t, err = f.Readlink(); err == nil {
				fmt.Fprintf(w, "    %s -> %s\n", p, t)
			}
		default:
			var attr p9.Attr
			if _, _, attr, err = f.GetAttr(p9.AttrMask{Size: true}); err == nil {
				fmt.Fprintf(w, "    %s (%d bytes)\n", p, attr.Size)
			}
		}
		f.Close()
		if err != nil {
			return errors.Wrapf(err, "9P %s", p)
		}
	}
	return nil
}

func readFile9P(root p9.File, name string) ([]byte, error) {
	_, f, err := root.Walk([]string{name})
	if err != nil {
		return nil, errors.Wrapf(err, "9P walk %s", name)
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		return nil, errors.Wrapf(err, "9P open %s", name)
	}
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := f.ReadAt(buf, int64(len(out)))
		out = append(out, buf[:n]...)
		if err == io.EOF || (err == nil && n == 0) {
			return out, nil
		}
		if err != nil {
			return nil, errors.Wrapf(err, "9P read %s", name)
		}
	}
}

func readlink9P(root p9.File, name string) (string, error) {
	_, f, err := root.Walk([]string{name})
	if err != nil {
		return "", errors.Wrapf(err, "9P walk %s", name)
	}
	defer f.Close()
	t, err := f.Readlink()
	return t, errors.Wrapf(err, "9P readlink %s", name)
}

func writeFile9P(root p9.File, name string, data []byte) error {
	// Create turns the fid it is called on into the new file: use a clone
	// of the root.
	_, dir, err := root.Walk(nil)
	if err != nil {
		return errors.Wrap(err, "9P walk (clone) /")
	}
	defer dir.Close()
	f, _, _, err := dir.Create(name, p9.WriteOnly, 0o644, p9.UID(os.Getuid()), p9.GID(os.Getgid()))
	if err != nil {
		return errors.Wrapf(err, "9P create %s", name)
	}
	for off := 0; off < len(data); {
		n, err := f.WriteAt(data[off:], int64(off))
		if err != nil {
			return errors.Wrapf(err, "9P write %s", name)
		}
		if n == 0 {
			return errors.Errorf("9P write %s: short write", name)
		}
		off += n
	}
	return nil
}

// indent puts "    | " before every line after the first of s.
func indent(s string) string {
	out := ""
	for i, c := range s {
		out += string(c)
		if c == '\n' && i < len(s)-1 {
			out += "    | "
		}
	}
	return out
}
