//go:build linux

// Command guest is the init process (/init) of the e2e test guest.
//
// Run by the kernel as PID 1 it mounts /proc, /sys, /dev and scratch
// tmpfs, loads the kernel modules the host listed (finit_module, in order),
// serves mount requests on a control socket, runs the workload script with
// busybox sh, forwards the script's result lines (timed) to a results port,
// unmounts the shares and powers the machine off.
//
// Run as anything else it serves the workload:
//
//	/init mount <share>          ask PID 1 to mount the share named <share>
//	/init random <bytes> <file>  write random bytes to a new file, print their sha256
//
// 9P cannot use a virtio-serial port directly as a trans=fd transport
// (virtio_console has no kernel write), so PID 1 keeps every port open and
// relays bytes between it and one end of a socketpair whose other end it
// hands to mount(2) as rfdno/wfdno. Only PID 1 can do that: the fds named in
// the mount options are looked up in the calling process, and the relay must
// outlive the command that asked for the mount.
package main

import (
	"bufio"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

// ctlSocket is where PID 1 serves mount requests.
const ctlSocket = "/run/e2e-ctl.sock"

func main() {
	if os.Getpid() == 1 {
		runInit() // never returns
	}
	os.Exit(clientMain(os.Args[1:]))
}

// clientMain runs the helper's subcommands.
func clientMain(args []string) int {
	if len(args) == 3 && args[0] == "random" {
		return randomMain(args[1], args[2])
	}
	if len(args) != 2 || args[0] != "mount" {
		fmt.Fprintln(os.Stderr, "usage: /init mount <share> | /init random <bytes> <file>")
		return 2
	}
	conn, err := net.Dial("unix", ctlSocket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e-guest: dial %s: %v\n", ctlSocket, err)
		return 1
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "%s %s\n", args[0], args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-guest: send request: %v\n", err)
		return 1
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e-guest: read reply: %v\n", err)
		return 1
	}
	reply = strings.TrimSpace(reply)
	if reply != "ok" {
		fmt.Fprintf(os.Stderr, "e2e-guest: %s %s: %s\n", args[0], args[1], reply)
		return 1
	}
	return 0
}

// logf writes a diagnostic line to the console.
func logf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stdout, "e2e-guest: "+format+"\n", args...)
}

// runInit is PID 1. Whatever happens it ends by powering the machine off,
// so the host sees QEMU exit instead of a hung guest.
func runInit() {
	res := &results{console: os.Stdout}
	start := time.Now()
	var bootTime time.Duration
	reason := func() (reason string) {
		defer func() {
			if r := recover(); r != nil {
				reason = fmt.Sprintf("panic: %v", r)
			}
		}()
		if err := setupSystem(); err != nil {
			return fmt.Sprintf("setup: %v", err)
		}
		cfg, err := readConfig(guestcfg.Path)
		if err != nil {
			return err.Error()
		}
		if err := res.open(cfg.Results); err != nil {
			return err.Error()
		}
		logf("%.2fs: loading %d modules", uptime().Seconds(), len(cfg.Modules))
		if err := loadModules(cfg.Modules); err != nil {
			return err.Error()
		}
		logf("%.2fs: modules loaded", uptime().Seconds())
		m := newMounter(cfg)
		ln, err := serveControl(m)
		if err != nil {
			return err.Error()
		}
		defer ln.Close()
		start, bootTime = time.Now(), uptime()
		logf("%.2fs: running %s", uptime().Seconds(), cfg.Script)
		runErr := runScript(cfg, res)
		if err := m.unmountAll(); err != nil {
			return fmt.Sprintf("unmount at the end: %v", err)
		}
		if runErr != nil {
			return runErr.Error()
		}
		return ""
	}()
	res.finish(reason, time.Since(start), bootTime)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		logf("power off: %v", err)
	}
	select {} // PID 1 must not exit: that is a kernel panic
}

// setupSystem mounts the pseudo file systems and installs busybox's applets.
func setupSystem() error {
	mounts := []struct{ src, target, fstype, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", ""},
		{"tmpfs", "/tmp", "tmpfs", "mode=1777"},
		{"tmpfs", "/run", "tmpfs", "mode=0755"},
	}
	for _, mt := range mounts {
		if err := os.MkdirAll(mt.target, 0o755); err != nil {
			return errors.Wrapf(err, "mkdir %s", mt.target)
		}
		if err := unix.Mount(mt.src, mt.target, mt.fstype, 0, mt.data); err != nil {
			return errors.Wrapf(err, "mount %s on %s", mt.fstype, mt.target)
		}
	}
	if out, err := exec.Command("/bin/busybox", "--install", "-s", "/bin").CombinedOutput(); err != nil {
		return errors.Wrapf(err, "busybox --install: %s", out)
	}
	return nil
}

// readConfig reads the host's instructions.
func readConfig(path string) (*guestcfg.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrapf(err, "read config %s", path)
	}
	var cfg guestcfg.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, errors.Wrapf(err, "parse config %s", path)
	}
	if cfg.Script == "" || cfg.Results == "" {
		return nil, errors.Errorf("config %s: script and results are required", path)
	}
	return &cfg, nil
}

// loadModules loads each module file in order; one already loaded (or built
// in) is fine.
func loadModules(paths []string) error {
	for _, p := range paths {
		if err := loadModule(p); err != nil {
			return err
		}
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return errors.Wrapf(err, "open module %s", path)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return errors.Wrapf(err, "finit_module %s", path)
	}
	return nil
}

// uptime is the time since the kernel started, from /proc/uptime.
func uptime() time.Duration {
	data, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	var secs float64
	if _, err := fmt.Sscanf(string(data), "%f", &secs); err != nil {
		return 0
	}
	return time.Duration(secs * float64(time.Second))
}

// runScript runs the workload and passes its output through res.
func runScript(cfg *guestcfg.Config, res *results) error {
	cmd := exec.Command("/bin/sh", cfg.Script)
	cmd.Env = []string{"PATH=/bin:/sbin", "HOME=/", "TERM=dumb"}
	for k, v := range cfg.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stdout
	cmd.Dir = "/"
	out, err := cmd.StdoutPipe()
	if err != nil {
		return errors.Wrap(err, "script stdout pipe")
	}
	if err := cmd.Start(); err != nil {
		return errors.Wrapf(err, "start %s", cfg.Script)
	}
	res.scan(out)
	if err := cmd.Wait(); err != nil {
		return errors.Wrapf(err, "script %s", cfg.Script)
	}
	return nil
}

// randomMain writes n pseudo-random bytes (PCG seeded from the kernel's
// random pool) to a new file and prints their sha256. The workload needs
// data nobody could predict, not cryptographic strength: reading 64 MiB
// from /dev/urandom costs seconds of emulated ChaCha20 under TCG.
func randomMain(size, path string) int {
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "e2e-guest: random: bad size %q\n", size)
		return 2
	}
	var seed [16]byte
	if _, err := crand.Read(seed[:]); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-guest: random: seed: %v\n", err)
		return 1
	}
	src := rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e-guest: random: %v\n", err)
		return 1
	}
	h := sha256.New()
	w := io.MultiWriter(f, h)
	buf := make([]byte, 1<<20)
	for n > 0 {
		chunk := buf[:min(int64(len(buf)), n)]
		i := 0
		for ; i+8 <= len(chunk); i += 8 {
			binary.LittleEndian.PutUint64(chunk[i:], src.Uint64())
		}
		if i < len(chunk) {
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], src.Uint64())
			copy(chunk[i:], b[:])
		}
		if _, err := w.Write(chunk); err != nil {
			f.Close()
			fmt.Fprintf(os.Stderr, "e2e-guest: random: write %s: %v\n", path, err)
			return 1
		}
		n -= int64(len(chunk))
	}
	if err := f.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-guest: random: close %s: %v\n", path, err)
		return 1
	}
	fmt.Println(hex.EncodeToString(h.Sum(nil)))
	return 0
}
