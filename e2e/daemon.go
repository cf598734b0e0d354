//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

// Errors of the daemon harness.
var (
	errNoDaemon     = errors.New("daemon binary not found")
	errDaemonExited = errors.New("daemon exited before it was ready")
	errNotReady     = errors.New("daemon not ready in time")
	errDaemonDied   = errors.New("daemon died while the guest ran")
)

// virtiofsdPath is QEMU's virtio-fs daemon (Debian: qemu-system-common).
const virtiofsdPath = "/usr/lib/qemu/virtiofsd"

// virtiofsdReady is what virtiofsd prints when it listens.
const virtiofsdReady = "Waiting for vhost-user socket connection"

// export is an extra (9P) export, attached by tag.
type export struct {
	Tag      string
	Source   string
	ReadOnly bool
}

// daemonSpec says what a daemon must serve.
type daemonSpec struct {
	Transport  string // guestcfg.Transport9P or guestcfg.TransportVirtioFS
	Dir        string // scratch directory for configs and logs
	SocketPath string
	SharedDir  string
	Exports    []export // 9P only
}

// daemonHandle is a running daemon.
type daemonHandle interface {
	// Name says which daemon this is, and how it was started.
	Name() string
	// PID is the process the harness (or the launcher) reports and stops.
	PID() int
	// SocketPath is where the VMM connects.
	SocketPath() string
	// Aname is the 9P attach name selecting an export: "" for the root,
	// else an export's tag.
	Aname(tag string) string
	// Stop stops the daemon and removes its socket.
	Stop(ctx context.Context) error
	// Log is the daemon's output so far, for failure reports.
	Log() string
	// MsizeCap is the largest 9P msize the daemon grants, 0 for "whatever
	// the client asks, up to the transport's limit".
	MsizeCap() int
	// Alive reports whether the daemon process still runs.
	Alive() bool
}

// watchDaemon cancels ctx with errDaemonDied when h dies while ctx is
// live, after a grace period: virtiofsd exits by design when the guest
// powers off, and QEMU's exit should win that race. It returns when ctx
// is done.
func watchDaemon(ctx context.Context, h daemonHandle, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if h.Alive() {
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			cancel(errors.Wrapf(errDaemonDied, "%s (pid %d)", h.Name(), h.PID()))
		}
		return
	}
}

// daemonStarter starts daemons of one kind.
type daemonStarter interface {
	Name() string
	Start(ctx context.Context, spec daemonSpec) (daemonHandle, error)
}

var (
	_ daemonStarter = launcherStarter{}
	_ daemonStarter = standinStarter{}
	_ daemonHandle  = (*launched)(nil)
	_ daemonHandle  = (*child)(nil)
)

// ---- fsd-launcher (the project's launcher, fsd and virtiofsd) -------------

// launcherStarter runs `fsd-launcher start --config F` and `fsd-launcher
// stop --pid N --socket P`, as a VM runtime would.
type launcherStarter struct {
	Bin string // the fsd-launcher binary
	// VirtiofsdTemplate is the example config the virtio-fs runs copy
	// (testdata/virtiofsd.toml), with the paths replaced.
	VirtiofsdTemplate string
}

// Name implements daemonStarter.Name.
func (l launcherStarter) Name() string { return "fsd-launcher" }

// launchedJSON is what `fsd-launcher start` prints.
type launchedJSON struct {
	PID    int    `json:"pid"`
	Socket string `json:"socket"`
}

// Start implements daemonStarter.Start.
func (l launcherStarter) Start(ctx context.Context, spec daemonSpec) (daemonHandle, error) {
	cfgPath := filepath.Join(spec.Dir, "launcher.toml")
	logPath := filepath.Join(spec.Dir, "daemon.log")
	var doc map[string]interface{}
	switch spec.Transport {
	case guestcfg.Transport9P:
		doc = map[string]interface{}{
			"socket_path":   spec.SocketPath,
			"shared_dir":    spec.SharedDir,
			"ready_timeout": "30s",
			"stop_timeout":  "10s",
			"log_file":      logPath,
			"log":           map[string]interface{}{"level": "info"},
		}
		var mounts []map[string]interface{}
		for _, e := range spec.Exports {
			mounts = append(mounts, map[string]interface{}{"tag": e.Tag, "source": e.Source, "readonly": e.ReadOnly})
		}
		if len(mounts) > 0 {
			doc["mount"] = mounts
		}
	case guestcfg.TransportVirtioFS:
		if _, err := toml.DecodeFile(l.VirtiofsdTemplate, &doc); err != nil {
			return nil, errors.Wrapf(err, "read %s", l.VirtiofsdTemplate)
		}
		doc["socket_path"] = spec.SocketPath
		doc["shared_dir"] = spec.SharedDir
		doc["log_file"] = logPath
	default:
		return nil, errors.Errorf("unknown transport %q", spec.Transport)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
		return nil, errors.Wrap(err, "encode launcher config")
	}
	if err := os.WriteFile(cfgPath, buf.Bytes(), 0o600); err != nil {
		return nil, errors.Wrapf(err, "write %s", cfgPath)
	}
	out, err := runTool(ctx, l.Bin, "start", "--config", cfgPath)
	if err != nil {
		return nil, errors.Wrapf(err, "fsd-launcher start (daemon log: %s)", readTail(logPath))
	}
	var js launchedJSON
	line := strings.TrimSpace(out)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal([]byte(line), &js); err != nil {
		return nil, errors.Wrapf(err, "fsd-launcher start printed %q, want {\"pid\":N,\"socket\":\"...\"}", out)
	}
	if js.PID <= 0 || js.Socket != spec.SocketPath {
		return nil, errors.Errorf("fsd-launcher start printed %q: want a pid and socket %q", out, spec.SocketPath)
	}
	name := "fsd via fsd-launcher"
	if spec.Transport == guestcfg.TransportVirtioFS {
		name = "virtiofsd via fsd-launcher"
	}
	p, ok := readProc(js.PID)
	if !ok {
		return nil, errors.Wrapf(errDaemonExited, "pid %d printed by fsd-launcher start is gone (daemon log: %s)", js.PID, readTail(logPath))
	}
	return &launched{proc: p, name: name, bin: l.Bin, pid: js.PID, socket: js.Socket, logPath: logPath}, nil
}

// launched is a daemon started by fsd-launcher.
type launched struct {
	proc                       proc // as seen right after start, to tell a reused PID
	name, bin, socket, logPath string
	pid                        int
}

func (h *launched) Name() string       { return h.name }
func (h *launched) Alive() bool        { return processAlive(h.proc) }
func (h *launched) PID() int           { return h.pid }
func (h *launched) SocketPath() string { return h.socket }

// Aname implements daemonHandle.Aname: fsd attaches the root export for
// aname "" and a [[mount]] by its tag.
func (h *launched) Aname(tag string) string { return tag }

// Stop implements daemonHandle.Stop with `fsd-launcher stop`.
func (h *launched) Stop(ctx context.Context) error {
	_, err := runTool(ctx, h.bin, "stop", "--pid", fmt.Sprint(h.pid), "--socket", h.socket)
	return errors.Wrap(err, "fsd-launcher stop")
}

func (h *launched) Log() string { return readTail(h.logPath) }

// MsizeCap implements daemonHandle.MsizeCap: fsd grants what the guest asks
// for (its default limit is above the 1 MiB the fd transport allows).
func (h *launched) MsizeCap() int { return 0 }

// runTool runs a command and returns its stdout; the error carries stderr.
func runTool(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// The launcher's own output pipes must not be held open by the daemon
	// it detaches; WaitDelay bounds the wait if they are.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.Wrapf(err, "%s %s: %s", bin, strings.Join(args, " "),
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// readTail returns the last 8 KiB of a log file.
func readTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(data) > 8<<10 {
		data = data[len(data)-8<<10:]
	}
	return string(data)
}

// ---- stand-ins: diod for 9P, virtiofsd started directly ------------------

// standinStarter starts diod (9P) or virtiofsd (virtio-fs) itself, without
// the launcher: the reference the launcher runs are compared with.
type standinStarter struct{}

// Name implements daemonStarter.Name.
func (standinStarter) Name() string { return "stand-in" }

// Start implements daemonStarter.Start.
func (standinStarter) Start(ctx context.Context, spec daemonSpec) (daemonHandle, error) {
	switch spec.Transport {
	case guestcfg.Transport9P:
		return startDiod(ctx, spec)
	case guestcfg.TransportVirtioFS:
		return startVirtiofsd(ctx, spec)
	}
	return nil, errors.Errorf("unknown transport %q", spec.Transport)
}

// child is a daemon process the harness started and owns: one goroutine
// waits for it.
type child struct {
	name     string
	msizeCap int
	cmd      *exec.Cmd
	socket   string
	done     chan struct{}
	err      error // after done
	mu       sync.Mutex
	out      bytes.Buffer // combined output
	anames   map[string]string
}

func (c *child) Name() string { return c.name }

// Alive implements daemonHandle.Alive.
func (c *child) Alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}
func (c *child) PID() int           { return c.cmd.Process.Pid }
func (c *child) SocketPath() string { return c.socket }

// Aname implements daemonHandle.Aname.
func (c *child) Aname(tag string) string { return c.anames[tag] }

// MsizeCap implements daemonHandle.MsizeCap.
func (c *child) MsizeCap() int { return c.msizeCap }

func (c *child) Log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// Write collects the daemon's output.
func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out.Len() < 1<<20 {
		c.out.Write(p)
	}
	return len(p), nil
}

// start starts the command and the goroutine that reaps it. Pdeathsig
// takes the daemon down with the test binary.
func (c *child) start() error {
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.done = make(chan struct{})
	runtime.LockOSThread()
	err := c.cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return errors.Wrapf(err, "start %s", c.cmd.Path)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return nil
}

// Stop implements daemonHandle.Stop: SIGTERM, SIGKILL after 10 s, reap,
// remove the socket. An exit caused by the SIGTERM is not an error
// (virtiofsd exits with status 1 by design). Processes the daemon forked
// (virtiofsd's sandbox child) are waited for too, and killed if they
// outlive the timeout: Stop returns only when none is left.
func (c *child) Stop(ctx context.Context) error {
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	select {
	case <-c.done:
	default:
		forked := descendants(c.cmd.Process.Pid)
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-deadline.C:
			_ = c.cmd.Process.Kill()
			<-c.done
		case <-ctx.Done():
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		for _, p := range forked {
			for processAlive(p) {
				select {
				case <-deadline.C:
					_ = syscall.Kill(p.PID, syscall.SIGKILL)
				case <-ctx.Done():
					_ = syscall.Kill(p.PID, syscall.SIGKILL)
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
	}
	if err := os.Remove(c.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return errors.Wrapf(err, "remove socket %s", c.socket)
	}
	return nil
}

// startDiod runs diod on a unix socket with the root export and the extra
// exports (diod wants the export's path as aname).
func startDiod(ctx context.Context, spec daemonSpec) (daemonHandle, error) {
	diod, err := exec.LookPath("diod")
	if err != nil {
		return nil, errors.Wrap(errNoDaemon, "diod (Debian package diod)")
	}
	var exports []string
	exports = append(exports, fmt.Sprintf("%q", spec.SharedDir))
	anames := map[string]string{"": spec.SharedDir}
	for _, e := range spec.Exports {
		opts := ""
		if e.ReadOnly {
			opts = "ro"
		}
		exports = append(exports, fmt.Sprintf("{ path=%q, opts=%q }", e.Source, opts))
		anames[e.Tag] = e.Source
	}
	conf := filepath.Join(spec.Dir, "diod.conf")
	lua := fmt.Sprintf("listen = { %q }\nexports = { %s }\nauth_required = 0\n",
		spec.SocketPath, strings.Join(exports, ", "))
	if err := os.WriteFile(conf, []byte(lua), 0o600); err != nil {
		return nil, errors.Wrapf(err, "write %s", conf)
	}
	// diod attaches the mount's root as user "nobody" (the Linux client
	// sends no uid for it), who must be able to reach the exports:
	// t.TempDir makes the run directory and its parent 0700.
	for _, d := range []string{filepath.Dir(spec.Dir), spec.Dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, errors.Wrapf(err, "chmod %s", d)
		}
	}
	// diod writes core files into its working directory when it crashes:
	// no core, and a scratch directory.
	// diod negotiates msize down to 64 KiB.
	c := &child{name: "diod (stand-in)", msizeCap: 64 << 10, socket: spec.SocketPath, anames: anames}
	c.cmd = exec.Command("/bin/sh", "-c", `ulimit -S -c 0; exec "$0" "$@"`,
		diod, "-f", "-n", "-c", conf, "-L", "stderr", "-l", spec.SocketPath)
	c.cmd.Dir = spec.Dir
	c.cmd.Stdout, c.cmd.Stderr = c, c
	if err := c.start(); err != nil {
		return nil, err
	}
	// diod has no ready line: ready when the socket accepts (it serves any
	// number of connections, so probing is harmless).
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.Dial("unix", spec.SocketPath)
		if err == nil {
			conn.Close()
			return c, nil
		}
		select {
		case <-c.done:
			return nil, errors.Wrapf(errDaemonExited, "diod: %v: %s", c.err, c.Log())
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
			if time.Now().Before(deadline) {
				continue
			}
		}
		_ = c.Stop(context.Background())
		return nil, errors.Wrapf(errNotReady, "diod socket %s: %s", spec.SocketPath, c.Log())
	}
}

// startVirtiofsd runs QEMU's virtiofsd on --socket-path and waits for its
// ready line.
func startVirtiofsd(ctx context.Context, spec daemonSpec) (daemonHandle, error) {
	if _, err := os.Stat(virtiofsdPath); err != nil {
		return nil, errors.Wrapf(errNoDaemon, "%s: %v", virtiofsdPath, err)
	}
	c := &child{name: "virtiofsd (stand-in)", socket: spec.SocketPath, anames: map[string]string{}}
	c.cmd = exec.Command(virtiofsdPath, "--socket-path="+spec.SocketPath,
		"-o", "source="+spec.SharedDir, "-o", "cache=auto", "-o", "sandbox=namespace")
	c.cmd.Dir = spec.Dir
	pr, pw := io.Pipe()
	c.cmd.Stdout, c.cmd.Stderr = c, pw
	if err := c.start(); err != nil {
		pw.Close()
		return nil, err
	}
	go func() {
		<-c.done
		pw.Close()
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			fmt.Fprintln(c, sc.Text())
			if !signalled && strings.Contains(sc.Text(), virtiofsdReady) {
				close(ready)
				signalled = true
			}
		}
		_, _ = io.Copy(c, pr)
	}()
	select {
	case <-ready:
		return c, nil
	case <-c.done:
		return nil, errors.Wrapf(errDaemonExited, "virtiofsd: %v: %s", c.err, c.Log())
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
	}
	_ = c.Stop(context.Background())
	return nil, errors.Wrapf(errNotReady, "virtiofsd: %s", c.Log())
}
