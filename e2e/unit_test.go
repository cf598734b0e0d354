//go:build linux

package e2e

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestCPIOReadByCpio writes an archive with every entry type and has the
// cpio tool (an independent reader) list and extract it.
func TestCPIOReadByCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("bin", 0o755)
	c.File("bin/tool", 0o755, []byte("#!/bin/sh\n"))
	c.File("odd", 0o600, []byte("12345")) // a size that needs padding
	c.File("empty", 0o644, nil)
	c.Symlink("bin/link", "tool")
	c.CharDev("console", 0o600, 5, 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}

	list := exec.Command("cpio", "-itv", "--quiet")
	list.Stdin = bytes.NewReader(buf.Bytes())
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	// One row per entry: what the listing must show for it.
	for _, want := range []string{
		"drwxr-xr-x", // bin
		"-rwxr-xr-x", // bin/tool
		"-rw-------", // odd
		"lrwxrwxrwx", // bin/link
		"bin/link -> tool",
		"crw-------", // console
		"5,",         // console's major
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("listing lacks %q:\n%s", want, out)
		}
	}

	dir := t.TempDir()
	var noDev bytes.Buffer
	c = newCPIOWriter(&noDev)
	c.Dir("bin", 0o755)
	c.File("bin/tool", 0o755, []byte("#!/bin/sh\n"))
	c.File("odd", 0o600, []byte("12345"))
	c.File("empty", 0o644, nil)
	c.Symlink("bin/link", "tool")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	extract := exec.Command("cpio", "-idm", "--quiet", "--no-absolute-filenames")
	extract.Dir = dir
	extract.Stdin = &noDev
	if out, err := extract.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	// One row per extracted entry: content and mode as written.
	for _, tc := range []struct {
		name string
		data string
		mode os.FileMode
	}{
		{"bin/tool", "#!/bin/sh\n", 0o755}, // executable survives
		{"odd", "12345", 0o600},            // padded data is not part of the file
		{"empty", "", 0o644},               // an empty file is still a file
	} {
		p := filepath.Join(dir, tc.name)
		data, err := os.ReadFile(p)
		if err != nil || string(data) != tc.data {
			t.Errorf("%s: %q %v, want %q", tc.name, data, err, tc.data)
		}
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != tc.mode {
			t.Errorf("%s: mode %v %v, want %v", tc.name, st.Mode(), err, tc.mode)
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/link")); err != nil || target != "tool" {
		t.Errorf("bin/link -> %q %v", target, err)
	}
}

// TestCPIOErrors: an empty name is refused and the writer's error sticks.
func TestCPIOErrors(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.File("/", 0o644, []byte("x"))
	c.File("later", 0o644, []byte("y"))
	if err := c.Close(); err == nil {
		t.Fatal("empty name accepted")
	}
	if strings.Contains(buf.String(), "later") {
		t.Error("entries written after an error")
	}
}

// fakeModules makes a module tree with the given modules.dep lines.
func fakeModules(t *testing.T, dep string, builtin ...string) kernel {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(strings.Join(builtin, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return kernel{Image: "/nonexistent", Version: "test", ModDir: dir}
}

func TestResolveModules(t *testing.T) {
	// The shape of Debian 6.1's 9p and virtiofs dependencies, with a
	// compressed module and a dash in a file name.
	const dep = `kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_fd.ko: kernel/net/9p/9pnet.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/fuse/virtiofs.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/fs/fuse/fuse.ko
kernel/fs/fuse/fuse.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio-pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/a.ko: kernel/b.ko
kernel/b.ko: kernel/a.ko
`
	k := fakeModules(t, dep, "kernel/drivers/char/virtio_console.ko")
	for _, tc := range []struct {
		name    string
		wanted  []string
		want    []string
		wantErr bool
	}{
		// Dependencies come first, each once, in an order the kernel accepts.
		{"9p chain", []string{"9pnet_fd", "9p"}, []string{"9pnet", "9pnet_fd", "netfs", "fscache", "9p"}, false},
		// A module shared by two wanted ones is loaded once.
		{"shared deps", []string{"virtio_pci", "virtiofs"}, []string{"virtio_ring", "virtio", "virtio_pci", "fuse", "virtiofs"}, false},
		// Built-in modules need no loading.
		{"builtin", []string{"virtio_console"}, nil, false},
		// A module that does not exist is an error, not a silent skip.
		{"unknown", []string{"nosuchmod"}, nil, true},
		// A dependency cycle is reported instead of recursing forever.
		{"cycle", []string{"a"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mods, err := k.resolveModules(tc.wanted)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			var names []string
			for _, m := range mods {
				names = append(names, m.Name)
				if !strings.HasPrefix(m.Path, k.ModDir) {
					t.Errorf("%s: path %s outside the module tree", m.Name, m.Path)
				}
			}
			if !tc.wantErr && !reflect.DeepEqual(names, tc.want) {
				t.Errorf("order %v, want %v", names, tc.want)
			}
		})
	}
}

// TestResolveModulesInstalled resolves the modules the tests load against
// the installed guest kernel, when there is one.
func TestResolveModulesInstalled(t *testing.T) {
	k, err := findKernel()
	if err != nil {
		t.Skip(err)
	}
	for _, wanted := range [][]string{
		{"virtio_pci", "virtio_console", "9pnet_fd", "9p"},
		{"virtio_pci", "virtiofs"},
	} {
		mods, err := k.resolveModules(wanted)
		if err != nil {
			t.Fatalf("%v: %v", wanted, err)
		}
		pos := map[string]int{}
		for i, m := range mods {
			pos[m.Name] = i
			if _, err := readModule(m.Path); err != nil {
				t.Errorf("read %s: %v", m.Path, err)
			}
		}
		for _, w := range wanted {
			if _, ok := pos[w]; !ok {
				t.Logf("%s: built in (not in the list)", w)
			}
		}
		// 9p needs 9pnet before it; virtiofs needs fuse.
		for _, before := range [][2]string{{"9pnet", "9p"}, {"fuse", "virtiofs"}, {"virtio", "virtio_pci"}} {
			a, okA := pos[before[0]]
			b, okB := pos[before[1]]
			if okA && okB && a > b {
				t.Errorf("%s loaded after %s", before[0], before[1])
			}
		}
	}
}

func TestReadModule(t *testing.T) {
	dir := t.TempDir()
	elf := []byte("\x7fELF fake module")
	plain := filepath.Join(dir, "m.ko")
	if err := os.WriteFile(plain, elf, 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(elf)
	zw.Close()
	gzPath := filepath.Join(dir, "m.ko.gz")
	if err := os.WriteFile(gzPath, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	xzPath := ""
	if _, err := exec.LookPath("xz"); err == nil {
		xzPath = filepath.Join(dir, "m.ko.xz")
		cmd := exec.Command("xz", "-zc", plain)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(xzPath, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		path    string
		wantErr bool
	}{
		{"plain .ko is read as is", plain, false},
		{".ko.gz is gunzipped", gzPath, false},
		{".ko.xz goes through xz", xzPath, false},
		{"an unknown compression is refused", filepath.Join(dir, "m.ko.lz4"), true},
		{"a missing file is an error", filepath.Join(dir, "gone.ko"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path == "" {
				t.Skip("xz not installed")
			}
			data, err := readModule(tc.path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !tc.wantErr && !bytes.Equal(data, elf) {
				t.Errorf("got %q", data)
			}
		})
	}
}

func TestParseResults(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name    string
		text    string
		wantErr bool
		check   func(*testing.T, *guestResults)
	}{
		{
			// A whole good run, with the serial port's CRLF endings.
			name: "done",
			text: "STEP a OK ns=1500000 detail with spaces\r\nSUM guest/x " + sum + "\r\nSTEP b SKIP ns=0\r\nE2E DONE steps=2 failed=0 ns=9000000 boot_ns=2000000000\r\n",
			check: func(t *testing.T, g *guestResults) {
				if !g.Done || len(g.Steps) != 2 || g.Steps[0].Detail != "detail with spaces" ||
					g.Steps[0].Elapsed != 1500*time.Microsecond || g.Sums["guest/x"] != sum ||
					g.Workload != 9*time.Millisecond || g.Boot != 2*time.Second {
					t.Errorf("%+v", g)
				}
			},
		},
		{
			// E2E FAILED is parsed, not Done.
			name: "failed",
			text: "STEP a FAIL ns=1 broke\nE2E FAILED steps=1 failed=1 ns=5 boot_ns=1 step \"x\" never ended\n",
			check: func(t *testing.T, g *guestResults) {
				if g.Done || g.Final == "" || g.Steps[0].Status != "FAIL" {
					t.Errorf("%+v", g)
				}
			},
		},
		{
			// No final line (guest died): parsed, not Done.
			name: "truncated",
			text: "STEP a OK ns=1\n",
			check: func(t *testing.T, g *guestResults) {
				if g.Done || g.Final != "" {
					t.Errorf("%+v", g)
				}
			},
		},
		// A step without its timing is malformed.
		{name: "no ns", text: "STEP a OK\n", wantErr: true},
		// A negative time is malformed.
		{name: "negative ns", text: "STEP a OK ns=-4\n", wantErr: true},
		// Only OK, FAIL and SKIP are statuses.
		{name: "bad status", text: "STEP a MAYBE ns=1\n", wantErr: true},
		// A SUM needs a full sha256.
		{name: "short sum", text: "SUM guest/x abc\n", wantErr: true},
		// Two final lines mean two runs wrote the port.
		{name: "two finals", text: "E2E DONE steps=0\nE2E DONE steps=0\n", wantErr: true},
		// The port carries nothing else.
		{name: "stray line", text: "hello\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := parseResults(tc.text)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, errMalformed) {
				t.Errorf("error %v is not errMalformed", err)
			}
			if tc.check != nil {
				tc.check(t, g)
			}
		})
	}
}

func TestCheckSteps(t *testing.T) {
	all := func(status string) *guestResults {
		g := &guestResults{Done: true, Final: "E2E DONE"}
		for _, n := range workloadSteps {
			g.Steps = append(g.Steps, step{Name: n, Status: status})
		}
		return g
	}
	for _, tc := range []struct {
		name      string
		res       func() *guestResults
		skippable map[string]bool
		want      string // substring of a problem, "" for none
	}{
		// Every step OK and a DONE line: no problem.
		{"all ok", func() *guestResults { return all("OK") }, nil, ""},
		// A skippable step may be skipped.
		{"allowed skip", func() *guestResults {
			g := all("OK")
			g.Steps[16].Status = "SKIP"
			return g
		}, map[string]bool{workloadSteps[16]: true}, ""},
		// Any other skip is a failure.
		{"unexpected skip", func() *guestResults {
			g := all("OK")
			g.Steps[3].Status = "SKIP"
			return g
		}, nil, "step " + workloadSteps[3] + ": SKIP"},
		// A failed step is reported with its detail.
		{"fail", func() *guestResults {
			g := all("OK")
			g.Steps[5].Status, g.Steps[5].Detail = "FAIL", "boom"
			return g
		}, nil, "FAIL boom"},
		// A step that never reported (script died) is a failure.
		{"missing", func() *guestResults {
			g := all("OK")
			g.Steps = g.Steps[:len(g.Steps)-1]
			return g
		}, nil, "not reported"},
		// Steps out of order mean the script is not the one expected.
		{"order", func() *guestResults {
			g := all("OK")
			g.Steps[0], g.Steps[1] = g.Steps[1], g.Steps[0]
			return g
		}, nil, "step 0 is"},
		// Without E2E DONE the run failed, whatever the steps say.
		{"no done", func() *guestResults {
			g := all("OK")
			g.Done, g.Final = false, "E2E FAILED steps=20"
			return g
		}, nil, "final line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems := checkSteps(tc.res(), tc.skippable)
			if tc.want == "" {
				if len(problems) != 0 {
					t.Errorf("problems: %v", problems)
				}
				return
			}
			if !strings.Contains(strings.Join(problems, "\n"), tc.want) {
				t.Errorf("problems %v lack %q", problems, tc.want)
			}
		})
	}
}

func TestHeadTail(t *testing.T) {
	h := &headTail{max: 20}
	for i := 0; i < 100; i++ {
		fmt.Fprintf(h, "%d,", i)
	}
	s := h.String()
	if !strings.HasPrefix(s, "0,1,2,3,4,") || !strings.HasSuffix(s, "97,98,99,") || !strings.Contains(s, "left out") {
		t.Errorf("got %q", s)
	}
	if len(h.head) != 10 || len(h.tail) != 10 {
		t.Errorf("kept %d+%d bytes, want 10+10", len(h.head), len(h.tail))
	}
	small := &headTail{max: 100}
	small.Write([]byte("short"))
	if small.String() != "short" {
		t.Errorf("got %q", small.String())
	}
}

// TestProcessScan starts a real process with a unique argument and finds
// it, as the leftover checks do.
func TestProcessScan(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "marker")
	cmd := exec.Command("/bin/sh", "-c", "sleep 60; : "+marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() { cmd.Process.Kill(); <-done }()

	// Start returns once the child is forked, maybe before it has
	// exec'd sh (its command line is still this test's until then).
	var found []proc
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if found = processesMentioning(marker); len(found) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(found) != 1 || found[0].PID != cmd.Process.Pid {
		t.Fatalf("processesMentioning: %v, want pid %d", found, cmd.Process.Pid)
	}
	if !processAlive(found[0]) {
		t.Error("processAlive false for a running process")
	}
	var sawChild bool
	for _, c := range childrenOf(os.Getpid()) {
		sawChild = sawChild || c.PID == cmd.Process.Pid
	}
	if !sawChild {
		t.Error("childrenOf misses the child")
	}
	// sh forks sleep: the grandchild is a descendant.
	deadline := time.Now().Add(10 * time.Second)
	for len(descendants(cmd.Process.Pid)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	d := descendants(cmd.Process.Pid)
	if len(d) == 0 || !strings.HasPrefix(d[0].Cmdline, "sleep") {
		t.Errorf("descendants: %v, want the sleep", d)
	}
	killAll(append(d, found...))
	<-done
	if left := waitGone(marker, 5*time.Second); len(left) != 0 {
		t.Errorf("still there after killAll: %v", left)
	}
	for _, p := range append(d, found...) {
		if processAlive(p) {
			t.Errorf("processAlive true after SIGKILL: %v", p)
		}
	}
}
