package hostfs

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Markers the helper opens (they do not exist) to delimit the system calls
// of each operation in the strace log.
const straceMarker = "/hostfs-strace-marker-"

func marker(name string) { unix.Open(straceMarker+name, unix.O_RDONLY, 0) }

// TestStraceHelper is the process TestSyscallCounts traces; it does
// nothing unless that test started it.
func TestStraceHelper(t *testing.T) {
	root := os.Getenv("HOSTFS_STRACE_ROOT")
	if root == "" {
		t.Skip("helper for TestSyscallCounts")
	}
	unix.Umask(0)
	fs, err := New(root)
	must(t, err)
	r, err := fs.Attach()
	must(t, err)
	marker("walk")
	_, f, _, _, err := r.WalkGetAttr([]string{"a", "b", "c", "d"})
	must(t, err)
	marker("getattr")
	_, _, _, err = f.GetAttr(p9.AttrMaskAll)
	must(t, err)
	marker("clunk")
	f.Close()
	marker("create")
	nf, _, _, err := r.Create("new", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	must(t, err)
	marker("clunk-created")
	nf.Close()
	marker("unlink")
	must(t, r.UnlinkAt("new", 0))
	marker("walk-one")
	_, g, err := r.Walk([]string{"a"})
	must(t, err)
	marker("clunk-one")
	g.Close()
	marker("create-own")
	// The daemon's own ids: the new inode has them already.
	own, _, _, err := r.Create("own", p9.ReadWrite, 0o644, p9.UID(unix.Geteuid()), p9.GID(unix.Getegid()))
	must(t, err)
	own.Close()
	marker("create-other")
	// Other ids: given with one fchown when the daemon runs as root
	// (and ignored otherwise).
	other, _, _, err := r.Create("other", p9.ReadWrite, 0o644, p9.UID(otherID), p9.GID(otherID))
	must(t, err)
	other.Close()
	marker("walk-other")
	_, h, err := r.Walk([]string{"other"})
	must(t, err)
	marker("open")
	_, _, err = h.Open(p9.ReadOnly)
	must(t, err)
	marker("remove")
	must(t, h.(*file).Remove())
	marker("clunk-removed")
	h.Close()
	marker("open-dir")
	_, d, err := r.Walk([]string{"r"})
	must(t, err)
	defer d.Close()
	_, _, err = d.Open(p9.ReadOnly)
	must(t, err)
	marker("readdir-partial")
	// Room for "." (25 bytes) but not ".." too (50): getdents64 asks
	// for 51 bytes and gets both (24 bytes each on the host), and the
	// host position goes back to "..".
	first, err := d.Readdir(0, 2*direntHeader)
	must(t, err)
	if len(first) != 1 {
		t.Fatalf("partial readdir: %v", first)
	}
	marker("readdir-rest")
	rest, err := d.Readdir(first[0].Offset, 4096)
	must(t, err)
	if len(rest) != 4 {
		t.Fatalf("readdir rest: %v", rest)
	}
	marker("end")
}

// otherID is a uid and gid that is not the test process's.
const otherID = 54321

// TestSyscallCounts runs the helper under strace and checks the system
// calls of the hot operations: one open and one fstat per walked
// component, one fstat per getattr, an open and an fstat per create (and
// an fchown only for ids the new inode does not already have), and the
// one lseek a readdir that stops mid-batch costs.
func TestSyscallCounts(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace not installed")
	}
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "a", "b", "c", "d"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "r"), 0o755))
	for _, name := range []string{"x1", "x2", "x3"} {
		must(t, os.WriteFile(filepath.Join(root, "r", name), nil, 0o644))
	}
	log := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command(strace, "-f", "-qq", "-o", log,
		"-e", "trace=open,openat,openat2,stat,lstat,fstat,newfstatat,statx,close,unlinkat,fchown,fchownat,fchmod,fchmodat,getdents64,lseek",
		os.Args[0], "-test.run=^TestStraceHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "HOSTFS_STRACE_ROOT="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cannot run under strace (ptrace not permitted?): %v\n%s", err, out)
	}
	f, err := os.Open(log)
	must(t, err)
	defer f.Close()
	// Count calls per section.
	counts := map[string]map[string]int{}
	section := ""
	call := regexp.MustCompile(`^(?:\d+\s+)?([a-z0-9_]+)\(`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, straceMarker); i >= 0 {
			section = strings.SplitN(line[i+len(straceMarker):], `"`, 2)[0]
			continue
		}
		if section == "" || section == "end" {
			continue
		}
		if m := call.FindStringSubmatch(line); m != nil {
			if counts[section] == nil {
				counts[section] = map[string]int{}
			}
			counts[section][m[1]]++
		}
	}
	createOther := map[string]int{"openat": 1, "fstat": 1, "close": 1}
	if unix.Geteuid() == 0 {
		createOther["fchown"] = 1
	}
	for _, row := range []struct {
		section string
		want    map[string]int
	}{
		// 4 components: 4 opens, 4 fstats, and the two intermediate
		// directories closed on the way.
		{"walk", map[string]int{"openat2": 4, "fstat": 4, "close": 2}},
		{"getattr", map[string]int{"fstat": 1}},
		{"clunk", map[string]int{"close": 2}}, // the file and its parent
		{"create", map[string]int{"openat": 1, "fstat": 1}},
		{"clunk-created", map[string]int{"close": 1}},
		{"unlink", map[string]int{"unlinkat": 1}},
		// What a Linux guest does: one name per walk, one open and one
		// fstat, nothing closed; the clunk closes the file's fd only
		// (its parent is the root's node, shared).
		{"walk-one", map[string]int{"openat2": 1, "fstat": 1}},
		{"clunk-one", map[string]int{"close": 1}},
		// Created as the daemon's own ids: no fchown, and no chmod
		// (umask 0, plain permission bits); the clunk closes the fd.
		{"create-own", map[string]int{"openat": 1, "fstat": 1, "close": 1}},
		{"create-other", createOther},
		{"walk-other", map[string]int{"openat2": 1, "fstat": 1}},
		// Open reopens the pinned fd through /proc/self/fd.
		{"open", map[string]int{"openat": 1}},
		// Remove checks the name still names the pinned inode.
		{"remove", map[string]int{"newfstatat": 1, "unlinkat": 1}},
		{"clunk-removed", map[string]int{"close": 2}}, // the O_PATH fd and the open one
		// A readdir that stops in the middle of what getdents64
		// returned puts the host position back (one lseek) and keeps
		// nothing; the next call reads on from there (no lseek), up
		// to the end of the directory (getdents64 answers 0).
		{"readdir-partial", map[string]int{"getdents64": 1, "lseek": 1}},
		{"readdir-rest", map[string]int{"getdents64": 2}},
	} {
		got := counts[row.section]
		if len(got) != len(row.want) {
			t.Errorf("%s: system calls %v, want %v", row.section, got, row.want)
			continue
		}
		for name, n := range row.want {
			if got[name] != n {
				t.Errorf("%s: system calls %v, want %v", row.section, got, row.want)
				break
			}
		}
	}
}
