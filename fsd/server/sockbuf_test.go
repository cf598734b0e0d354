package server

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// wmemMax is net.core.wmem_max, the cap of SO_SNDBUF without
// CAP_NET_ADMIN.
func wmemMax(t *testing.T) int { return sysctlInt(t, "wmem_max") }

// sysctlInt reads net.core.NAME.
func sysctlInt(t *testing.T, name string) int {
	b, err := os.ReadFile("/proc/sys/net/core/" + name)
	if err != nil {
		t.Skipf("net.core.%s unreadable: %v", name, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// serverSocketSendBuffer finds the server's end of the one connection to
// the unix socket at addr among this process's descriptors (the listener
// itself is skipped) and returns its SO_SNDBUF.
func serverSocketSendBuffer(t *testing.T, addr string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	found, size := 0, 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(l, "socket:") {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		if un, ok := sa.(*unix.SockaddrUnix); !ok || un.Name != addr {
			continue
		}
		if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 0 {
			continue // the listener
		}
		if size, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF); err != nil {
			t.Fatal(err)
		}
		found++
	}
	if found != 1 {
		t.Fatalf("%d server ends of connections to %s, want 1", found, addr)
	}
	return size
}

// TestSendBufferHoldsReply proves that with WithSendBuffer the server's
// socket can take a whole reply of msize bytes in one write(2) after
// Tversion (the kernel's default, 212992 bytes, splits a 1 MiB Rread into
// five writes, each waiting for the client), that a small msize leaves the
// default alone, and that without the option the server makes no such call
// (a seccomp filter that does not allow setsockopt would refuse it).
func TestSendBufferHoldsReply(t *testing.T) {
	defaultSize := sysctlInt(t, "wmem_default") // a new socket's SO_SNDBUF
	cases := []struct {
		name  string
		msize uint32
		on    bool
		want  int // at least, with the option; the default without
	}{
		// The default already holds an 8 KiB reply: nothing to change.
		{"small msize", 8192, true, 2 * (8192 + sendBufferSlack)},
		// 1 MiB replies need about 1.1 MiB of socket buffer accounting
		// (the kernel doubles the value set).
		{"1 MiB msize", 1 << 20, true, 2 * (1<<20 + sendBufferSlack)},
		// Without the option the buffer keeps the system default.
		{"option off", 1 << 20, false, defaultSize},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.on && os.Geteuid() != 0 && wmemMax(t)*2 < tc.want {
				t.Skipf("not root and net.core.wmem_max %d is below %d: the kernel caps the buffer", wmemMax(t), tc.want/2)
			}
			fs := newTestFS(t)
			_, addr := serve(t, fs, WithMaxMsize(tc.msize), WithSendBuffer(tc.on))
			c := versioned(t, addr, tc.msize)
			defer c.conn.Close()
			c.attach(1) // the reply to Tversion was written: the buffer is set
			got := serverSocketSendBuffer(t, addr)
			switch {
			case tc.on && got < tc.want:
				t.Fatalf("SO_SNDBUF %d after Tversion with msize %d, want at least %d", got, tc.msize, tc.want)
			case !tc.on && got != tc.want:
				t.Fatalf("SO_SNDBUF %d without WithSendBuffer, want the default %d", got, tc.want)
			}
		})
	}
}

// TestSetSendBufferOnSocketpair checks setSendBuffer against the kernel
// directly: asked for n bytes it reports at least 2n in effect, or an
// error that says the buffer was capped.
func TestSetSendBufferOnSocketpair(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	const n = 1<<20 + sendBufferSlack
	got, err := setSendBuffer(fds[0], n)
	if err != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("root (SO_SNDBUFFORCE) got %d: %v", got, err)
		}
		if got >= 2*n {
			t.Fatalf("error %v although %d is in effect", err, got)
		}
		return
	}
	if cur, _ := unix.GetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF); got < 2*n || cur != got {
		t.Fatalf("reported %d, kernel says %d, want both at least %d", got, cur, 2*n)
	}
	// Asked again, it changes nothing and reports the same size.
	if again, err := setSendBuffer(fds[0], n); err != nil || again != got {
		t.Fatalf("second call: %d, %v; want %d", again, err, got)
	}
}
