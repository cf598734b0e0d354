//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/errors"
)

// errNoQEMU means qemu-system-x86_64 is not installed.
var errNoQEMU = errors.New("qemu-system-x86_64 not found (Debian package qemu-system-x86)")

// Reasons a guest run ends badly; vmRun.Err wraps one of them.
var (
	errGuestTimeout = errors.New("guest did not finish before the timeout")
	errGuestPanic   = errors.New("guest kernel panicked")
)

// panicMarker is what the kernel prints when it panics (then reboots with
// panic=-1, which -no-reboot turns into a QEMU exit).
const panicMarker = "Kernel panic"

// maxConsole bounds the console kept in memory: its head and its tail.
const maxConsole = 4 << 20

// vm is one QEMU (TCG) guest run.
type vm struct {
	QEMU     string
	Kernel   string
	Initrd   string
	MemoryMB int
	CPUs     int
	Append   string   // extra kernel command line
	Args     []string // devices and backends (shares)
	Dir      string   // where results.log goes
	Timeout  time.Duration
	// OnLine, when set, sees every console line as it arrives.
	OnLine func(string)
}

// vmRun is what a guest run left.
type vmRun struct {
	Console string        // serial console (kernel and workload output)
	Results string        // the results port
	Err     error         // nil when QEMU exited 0 by itself (guest powered off)
	Wall    time.Duration // QEMU start to exit
}

// findQEMU locates qemu-system-x86_64.
func findQEMU() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", errNoQEMU
	}
	return p, nil
}

// args is QEMU's command line.
func (v vm) args(resultsPath string) []string {
	mem := v.MemoryMB
	if mem == 0 {
		mem = 512
	}
	cpus := v.CPUs
	if cpus == 0 {
		cpus = 1
	}
	a := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		// KVM guests hang at boot on these machines; TCG works everywhere.
		"-accel", "tcg", "-cpu", "max",
		"-smp", fmt.Sprint(cpus), "-m", fmt.Sprintf("%dM", mem),
		"-kernel", v.Kernel, "-initrd", v.Initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 quiet rdinit=/init " + v.Append),
		// ttyS0: console on QEMU's stdout; ttyS1: result lines only.
		"-chardev", "stdio,id=console,signal=off",
		"-serial", "chardev:console",
		"-chardev", "file,id=results,path=" + resultsPath,
		"-serial", "chardev:results",
	}
	return append(a, v.Args...)
}

// run boots the guest and waits until QEMU exits, the guest panics, the
// timeout passes or ctx is cancelled; in the last three cases it kills
// QEMU. It always returns with QEMU reaped.
func (v vm) run(ctx context.Context) (*vmRun, error) {
	resultsPath := filepath.Join(v.Dir, "results.log")
	cmd := exec.Command(v.QEMU, v.args(resultsPath)...)
	cmd.Stdin = nil
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, errors.Wrap(err, "qemu stdout pipe")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// If the test binary dies, QEMU goes with it (Pdeathsig belongs to the
	// forking thread, hence the lock).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, errors.Wrapf(err, "start %s", v.QEMU)
	}
	start := time.Now()

	console := &headTail{max: maxConsole}
	panicked := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		var once sync.Once
		br := bufio.NewReaderSize(stdout, 64<<10)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				console.Write([]byte(line))
				if v.OnLine != nil {
					v.OnLine(strings.TrimRight(line, "\r\n"))
				}
				if strings.Contains(line, panicMarker) {
					once.Do(func() { close(panicked) })
				}
			}
			if err != nil {
				_, _ = io.Copy(io.Discard, br)
				return
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-scanned // Wait closes the pipe: read it to the end first
		exited <- cmd.Wait()
	}()

	timeout := time.NewTimer(v.Timeout)
	defer timeout.Stop()
	var reason, waitErr error
	reaped := false
	select {
	case waitErr = <-exited:
		reaped = true
	case <-panicked:
		// Let the panic message finish; with panic=-1 and -no-reboot QEMU
		// exits by itself.
		select {
		case waitErr = <-exited:
			reaped = true
		case <-time.After(5 * time.Second):
		}
		reason = errGuestPanic
	case <-timeout.C:
		reason = errors.Wrapf(errGuestTimeout, "after %s", v.Timeout)
	case <-ctx.Done():
		reason = errors.Wrap(context.Cause(ctx), "guest run cancelled")
	}
	if !reaped {
		_ = cmd.Process.Kill() // ESRCH when it just exited: fine
		<-exited               // killed by us: the reason says why
	}
	r := &vmRun{Console: console.String(), Wall: time.Since(start)}
	if res, err := os.ReadFile(resultsPath); err == nil {
		r.Results = string(res)
	}
	switch {
	case reason != nil:
		r.Err = reason
	case waitErr != nil:
		r.Err = errors.Wrapf(waitErr, "qemu: %s", strings.TrimSpace(stderr.String()))
	case strings.Contains(r.Console, panicMarker):
		r.Err = errGuestPanic
	}
	if reason != nil && stderr.Len() > 0 {
		r.Console += "\n[qemu stderr]\n" + stderr.String()
	}
	return r, nil
}

// headTail keeps the first and the last max/2 bytes written to it.
type headTail struct {
	mu      sync.Mutex
	max     int
	head    []byte
	tail    []byte
	dropped int
}

func (h *headTail) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(p)
	if room := h.max/2 - len(h.head); room > 0 {
		k := min(room, len(p))
		h.head = append(h.head, p[:k]...)
		p = p[k:]
	}
	h.tail = append(h.tail, p...)
	if over := len(h.tail) - h.max/2; over > 0 {
		h.dropped += over
		h.tail = append(h.tail[:0], h.tail[over:]...)
	}
	return n, nil
}

func (h *headTail) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dropped == 0 {
		return string(h.head) + string(h.tail)
	}
	return fmt.Sprintf("%s\n[... %d bytes left out ...]\n%s", h.head, h.dropped, h.tail)
}

// pausedVM is a QEMU that connects its backends (sockets, vhost-user) but
// never starts its CPU (-S): enough for a daemon to see a VMM.
type pausedVM struct {
	cmd    *exec.Cmd
	done   chan struct{}
	stderr bytes.Buffer
}

// startPaused starts QEMU with -S and the given backends and devices.
func startPaused(qemu string, memMB int, args []string) (*pausedVM, error) {
	a := append([]string{"-S", "-nodefaults", "-no-user-config", "-display", "none",
		"-accel", "tcg", "-m", fmt.Sprintf("%dM", memMB)}, args...)
	p := &pausedVM{cmd: exec.Command(qemu, a...), done: make(chan struct{})}
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	err := p.cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, errors.Wrapf(err, "start %s", qemu)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Exited is closed when QEMU has exited and been reaped.
func (p *pausedVM) Exited() <-chan struct{} { return p.done }

// Stop kills QEMU and reaps it; it returns QEMU's stderr.
func (p *pausedVM) Stop() string {
	_ = p.cmd.Process.Kill() // ESRCH when it already exited
	<-p.done
	return p.stderr.String()
}
