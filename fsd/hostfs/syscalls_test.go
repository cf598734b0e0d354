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
	marker("end")
}

// TestSyscallCounts runs the helper under strace and checks the system
// calls of the hot operations: one open and one fstat per walked
// component, one fstat per getattr, an open and an fstat per create.
func TestSyscallCounts(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace not installed")
	}
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "a", "b", "c", "d"), 0o755))
	log := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command(strace, "-f", "-qq", "-o", log,
		"-e", "trace=open,openat,openat2,stat,lstat,fstat,newfstatat,statx,close,unlinkat,fchown,fchownat,fchmod,fchmodat",
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
