//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

// relayBuf is the copy buffer per direction: at least one 9P message of the
// largest msize the tests use, so a message crosses in one read and write.
const relayBuf = 1 << 20

// mounter mounts shares on request. It owns the relays of the 9P ports.
type mounter struct {
	cfg    *guestcfg.Config
	mu     sync.Mutex // serialises mounts
	relays map[string]*relay
}

func newMounter(cfg *guestcfg.Config) *mounter {
	return &mounter{cfg: cfg, relays: map[string]*relay{}}
}

// share finds a share by name.
func (m *mounter) share(name string) (guestcfg.Share, error) {
	for _, s := range m.cfg.Shares {
		if s.Name == name {
			return s, nil
		}
	}
	return guestcfg.Share{}, errors.Errorf("no share named %q", name)
}

// mount mounts the share named name at its target.
func (m *mounter) mount(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.share(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Target, 0o755); err != nil {
		return errors.Wrapf(err, "mkdir %s", s.Target)
	}
	switch s.Transport {
	case guestcfg.TransportVirtioFS:
		return errors.Wrapf(unix.Mount(s.Source, s.Target, "virtiofs", 0, s.Options),
			"mount -t virtiofs %s %s -o %s", s.Source, s.Target, s.Options)
	case guestcfg.Transport9P:
		r, err := m.relay(s.Port)
		if err != nil {
			return err
		}
		kern, err := r.attach()
		if err != nil {
			return err
		}
		// The kernel takes its own references to the file during mount(2);
		// ours goes away whatever the outcome.
		defer kern.Close()
		fd := kern.Fd()
		opts := fmt.Sprintf("%s,rfdno=%d,wfdno=%d", s.Options, fd, fd)
		return errors.Wrapf(unix.Mount(s.Source, s.Target, "9p", 0, opts),
			"mount -t 9p %s %s -o %s", s.Source, s.Target, opts)
	default:
		return errors.Errorf("share %q: unknown transport %q", name, s.Transport)
	}
}

// relay returns the relay of a virtio-serial port, opening it on first use.
func (m *mounter) relay(port string) (*relay, error) {
	if r, ok := m.relays[port]; ok {
		return r, nil
	}
	dev, err := findPort(port, time.Duration(m.cfg.PortWait)*time.Second)
	if err != nil {
		return nil, err
	}
	// A blocking fd, kept out of Go's poller: each direction then costs one
	// read and one write, with no epoll round trip, which matters when
	// every guest instruction is emulated.
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Wrapf(err, "open port %s (%s)", port, dev)
	}
	r := &relay{name: port, dev: os.NewFile(uintptr(fd), dev)}
	go r.fromPort()
	m.relays[port] = r
	return r, nil
}

// findPort waits for the virtio-serial port called name and returns its
// device node.
func findPort(name string, wait time.Duration) (string, error) {
	if wait <= 0 {
		wait = 30 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		paths, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err == nil && strings.TrimSpace(string(b)) == name {
				dev := "/dev/" + filepath.Base(filepath.Dir(p))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", errors.Errorf("virtio-serial port %q did not appear within %s", name, wait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unmountAll unmounts every share target still mounted.
func (m *mounter) unmountAll() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mounted, err := mountPoints()
	if err != nil {
		return err
	}
	var errs []string
	for i := len(m.cfg.Shares) - 1; i >= 0; i-- {
		t := m.cfg.Shares[i].Target
		if !mounted[t] {
			continue
		}
		if err := unix.Unmount(t, 0); err != nil {
			errs = append(errs, fmt.Sprintf("umount %s: %v", t, err))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// mountPoints lists the current mount points.
func mountPoints() (map[string]bool, error) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil, errors.Wrap(err, "read /proc/self/mounts")
	}
	out := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			out[f[1]] = true
		}
	}
	return out, nil
}

// relay copies bytes between a virtio-serial port and the current 9P
// session's socketpair. The port stays open for the whole run (one QEMU
// chardev connection, one server connection); a remount starts a new 9P
// session (Tversion) on the same byte stream, as a guest reusing a
// virtio-9p channel does.
type relay struct {
	name string
	dev  *os.File

	mu   sync.Mutex
	peer *os.File      // our end of the current socketpair, nil between sessions
	done chan struct{} // closed when the current session's copier ends
}

// attach starts a session: it returns the socketpair end for the kernel.
func (r *relay) attach() (*os.File, error) {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	if done != nil {
		// The previous session ends once the kernel has closed its end,
		// shortly after umount returns.
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return nil, errors.Errorf("port %s: previous 9P session still open", r.name)
		}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Wrap(err, "socketpair")
	}
	ours := os.NewFile(uintptr(fds[0]), r.name+"-relay")
	kern := os.NewFile(uintptr(fds[1]), r.name+"-kernel")
	d := make(chan struct{})
	r.mu.Lock()
	r.peer, r.done = ours, d
	r.mu.Unlock()
	go r.toPort(ours, d)
	return kern, nil
}

// toPort copies the kernel's requests to the port until the kernel closes
// its end (umount) or the port fails.
func (r *relay) toPort(ours *os.File, done chan struct{}) {
	buf := make([]byte, relayBuf)
	_, err := io.CopyBuffer(r.dev, ours, buf)
	if err != nil {
		logf("relay %s: guest to host: %v", r.name, err)
	}
	r.mu.Lock()
	if r.peer == ours {
		r.peer = nil
	}
	r.mu.Unlock()
	ours.Close()
	close(done)
}

// fromPort copies the server's replies to the current session for the whole
// run. When the host side hangs up (the daemon died), it ends the session so
// the guest's file operations fail instead of hanging.
func (r *relay) fromPort() {
	buf := make([]byte, relayBuf)
	hungUp := false
	for {
		n, err := r.dev.Read(buf)
		if n > 0 {
			hungUp = false
			r.mu.Lock()
			p := r.peer
			r.mu.Unlock()
			if p == nil {
				logf("relay %s: %d bytes from the host outside a session: dropped", r.name, n)
			} else if _, werr := p.Write(buf[:n]); werr != nil {
				logf("relay %s: host to guest: %v", r.name, werr)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// virtio_console reads 0 bytes while the host is not connected.
			if !hungUp {
				logf("relay %s: host side not connected", r.name)
				hungUp = true
				r.mu.Lock()
				if r.peer != nil {
					_ = unix.Shutdown(int(r.peer.Fd()), unix.SHUT_RDWR)
				}
				r.mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		default:
			logf("relay %s: read port: %v", r.name, err)
			return
		}
	}
}

// serveControl answers "mount <share>" requests on ctlSocket.
func serveControl(m *mounter) (net.Listener, error) {
	ln, err := net.Listen("unix", ctlSocket)
	if err != nil {
		return nil, errors.Wrapf(err, "listen %s", ctlSocket)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handleControl(m, c)
		}
	}()
	return ln, nil
}

func handleControl(m *mounter, c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	reply := "ok"
	switch {
	case len(f) == 2 && f[0] == "mount":
		if err := m.mount(f[1]); err != nil {
			reply = "error " + err.Error()
		}
	default:
		reply = "error unknown request " + strings.TrimSpace(line)
	}
	fmt.Fprintln(c, reply)
}
