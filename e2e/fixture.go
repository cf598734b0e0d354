//go:build linux

package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

// shape is the size of the workload; the guest gets it in its
// environment, so host and guest never disagree.
type shape struct {
	Sizes  []int // sizes of the files each side writes
	Many   int   // entries the host puts in many/ for ls
	Deep   int   // depth of the guest's mkdir -p
	Create int   // files the guest creates one by one
}

// fullShape is the e2e workload: files of 1 byte to 64 MiB (with odd sizes
// around page and message boundaries), a 5,000-entry directory.
var fullShape = shape{
	Sizes:  []int{1, 4096, 1<<20 + 1, 64 << 20},
	Many:   5000,
	Deep:   32,
	Create: 100,
}

// Guest mount points.
const (
	guestRoot = "/mnt/root"
	guestRO   = "/mnt/ro"
)

// roTag is the read-only export's tag (9P aname).
const roTag = "ro"

// roHello is the content of the read-only export's file.
const roHello = "read-only export"

// fixture is the host side of the workload: the exported directories,
// what the host put there before boot, and the checks after the run.
type fixture struct {
	Shape   shape
	Dir     string // the run's directory
	Root    string // root export
	RO      string // read-only export
	Outside string // a directory next to the exports, never exported
	Secret  string // content of Outside/secret
	// HostSums are the sha256 of the files the host wrote, by path
	// relative to Root ("host/h-1").
	HostSums map[string]string
}

// newFixture fills dir with the exports.
func newFixture(dir string, sh shape) (*fixture, error) {
	f := &fixture{
		Shape:    sh,
		Dir:      dir,
		Root:     filepath.Join(dir, "root"),
		RO:       filepath.Join(dir, "ro"),
		Outside:  filepath.Join(dir, "outside"),
		HostSums: map[string]string{},
	}
	for _, d := range []string{f.Root, f.RO, f.Outside, filepath.Join(f.Root, "host"), filepath.Join(f.Root, "many")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, errors.Wrapf(err, "mkdir %s", d)
		}
	}
	// Random files with a manifest the guest checks with sha256sum.
	var manifest bytes.Buffer
	for _, n := range sh.Sizes {
		name := fmt.Sprintf("h-%d", n)
		sum, err := writeRandom(filepath.Join(f.Root, "host", name), n)
		if err != nil {
			return nil, err
		}
		f.HostSums["host/"+name] = sum
		fmt.Fprintf(&manifest, "%s  %s\n", sum, name)
	}
	if err := os.WriteFile(filepath.Join(f.Root, "host", "SHA256SUMS"), manifest.Bytes(), 0o644); err != nil {
		return nil, errors.Wrap(err, "write SHA256SUMS")
	}
	for i := 0; i < sh.Many; i++ {
		p := filepath.Join(f.Root, "many", fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return nil, errors.Wrapf(err, "create %s", p)
		}
	}
	// A tree for rm -rf: 4 x 4 directories, 8 files each.
	for a := 0; a < 4; a++ {
		for b := 0; b < 4; b++ {
			d := filepath.Join(f.Root, "rmtree", fmt.Sprint("a", a), fmt.Sprint("b", b))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, errors.Wrapf(err, "mkdir %s", d)
			}
			for i := 0; i < 8; i++ {
				if err := os.WriteFile(filepath.Join(d, fmt.Sprint("f", i)), []byte("x"), 0o644); err != nil {
					return nil, errors.Wrap(err, "write rmtree file")
				}
			}
		}
	}
	// The secret outside the export, and symlinks to it made on the host.
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return nil, errors.Wrap(err, "random token")
	}
	f.Secret = "secret-" + hex.EncodeToString(token)
	if err := os.WriteFile(filepath.Join(f.Outside, "secret"), []byte(f.Secret+"\n"), 0o644); err != nil {
		return nil, errors.Wrap(err, "write secret")
	}
	deep := strings.Repeat("../", 20) + strings.TrimPrefix(filepath.Join(f.Outside, "secret"), "/")
	for name, target := range map[string]string{
		"escape-abs":  filepath.Join(f.Outside, "secret"), // absolute host path
		"escape-rel":  "../outside/secret",                // relative, one level up
		"escape-deep": deep,                               // up past any root, then down
		"escape-dir":  f.Outside,                          // a directory outside
	} {
		if err := os.Symlink(target, filepath.Join(f.Root, name)); err != nil {
			return nil, errors.Wrapf(err, "symlink %s", name)
		}
	}
	if err := os.WriteFile(filepath.Join(f.RO, "hello"), []byte(roHello+"\n"), 0o644); err != nil {
		return nil, errors.Wrap(err, "write ro/hello")
	}
	return f, nil
}

// writeRandom writes n random bytes to path and returns their sha256.
func writeRandom(path string, n int) (string, error) {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", errors.Wrapf(err, "create %s", path)
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(out, h), rand.Reader, int64(n))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", errors.Wrapf(err, "write %s", path)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileSum is the sha256 of a file.
func fileSum(path string) (string, error) {
	in, err := os.Open(path)
	if err != nil {
		return "", errors.Wrapf(err, "open %s", path)
	}
	defer in.Close()
	h := sha256.New()
	if _, err := io.Copy(h, in); err != nil {
		return "", errors.Wrapf(err, "read %s", path)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// guestEnv is the workload's environment.
func (f *fixture) guestEnv(transport string, haveRO bool) map[string]string {
	sizes := make([]string, len(f.Shape.Sizes))
	for i, n := range f.Shape.Sizes {
		sizes[i] = strconv.Itoa(n)
	}
	env := map[string]string{
		"E2E_TRANSPORT": transport,
		"E2E_ROOT":      guestRoot,
		"E2E_RO":        "",
		"E2E_SIZES":     strings.Join(sizes, " "),
		"E2E_MANY":      strconv.Itoa(f.Shape.Many),
		"E2E_DEEP":      strconv.Itoa(f.Shape.Deep),
		"E2E_CREATE":    strconv.Itoa(f.Shape.Create),
		"E2E_OUTSIDE":   f.Outside,
	}
	if haveRO {
		env["E2E_RO"] = guestRO
	}
	return env
}

// workloadSteps are the steps workload.sh runs, in order. skippable
// names the steps a transport may skip (and must: a SKIP anywhere else is a
// failure).
var workloadSteps = []string{
	"mount_root", "host_files", "gen_data", "write_files", "read_files",
	"mkdir_deep", "ls_many", "create_files", "rename_across", "hardlink",
	"symlink", "chmod", "chown", "touch_date", "truncate", "rm_rf",
	"ro_export", "symlink_escape", "remount", "umount",
}

// checkSteps compares the guest's steps with the expected list.
func checkSteps(res *guestResults, skippable map[string]bool) []string {
	var problems []string
	if !res.Done {
		problems = append(problems, fmt.Sprintf("final line: %q, want %s", res.Final, guestcfg.LineDone))
	}
	if len(res.Steps) != len(workloadSteps) {
		problems = append(problems, fmt.Sprintf("%d steps reported, want %d", len(res.Steps), len(workloadSteps)))
	}
	for i, name := range workloadSteps {
		s, ok := res.step(name)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("step %s: not reported", name))
		case i < len(res.Steps) && res.Steps[i].Name != name:
			problems = append(problems, fmt.Sprintf("step %d is %s, want %s", i, res.Steps[i].Name, name))
		case s.Status == guestcfg.StatusOK:
		case s.Status == guestcfg.StatusSkip && skippable[name]:
		default:
			problems = append(problems, fmt.Sprintf("step %s: %s %s", name, s.Status, s.Detail))
		}
	}
	return problems
}

// verify checks on the host what the guest did. transport tells which
// effects to expect.
func (f *fixture) verify(res *guestResults, haveRO bool) []string {
	var problems []string
	bad := func(format string, args ...interface{}) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	// Host to guest: what the guest read is what the host wrote.
	for path, want := range f.HostSums {
		if got := res.Sums[path]; got != want {
			bad("guest read %s as %q, host wrote %s", path, got, want)
		}
	}
	// Guest to host: what the guest wrote is on the host.
	for _, n := range f.Shape.Sizes {
		rel := fmt.Sprintf("guest/g-%d", n)
		want, ok := res.Sums[rel]
		if !ok {
			bad("guest reported no sum for %s", rel)
			continue
		}
		p := filepath.Join(f.Root, rel)
		if st, err := os.Stat(p); err != nil || st.Size() != int64(n) {
			bad("%s: %v size %v, want %d", rel, err, sizeOf(st), n)
			continue
		}
		if got, err := fileSum(p); err != nil || got != want {
			bad("%s on the host: sha256 %s (%v), guest wrote %s", rel, got, err, want)
		}
	}
	// mkdir -p
	deep := filepath.Join(f.Root, "deep")
	for i := 1; i <= f.Shape.Deep; i++ {
		deep = filepath.Join(deep, fmt.Sprint("d", i))
	}
	if st, err := os.Stat(deep); err != nil || !st.IsDir() {
		bad("deep tree: %v", err)
	}
	// Files created one by one.
	if ents, err := os.ReadDir(filepath.Join(f.Root, "created")); err != nil || len(ents) != f.Shape.Create {
		bad("created/: %d entries (%v), want %d", len(ents), err, f.Shape.Create)
	} else if b, err := os.ReadFile(filepath.Join(f.Root, "created", fmt.Sprint("c", f.Shape.Create-1))); err != nil ||
		string(b) != fmt.Sprintf("file %d\n", f.Shape.Create-1) {
		bad("created/c%d: %q %v", f.Shape.Create-1, b, err)
	}
	// Renames.
	expectContent(&problems, filepath.Join(f.Root, "ren/b/moved"), "rename-me\n")
	expectContent(&problems, filepath.Join(f.Root, "ren/b/sub/dir2/inner"), "inner\n")
	expectAbsent(&problems, filepath.Join(f.Root, "ren/a/file"))
	expectAbsent(&problems, filepath.Join(f.Root, "ren/a/dir"))
	// Hard link: one inode, two names, the append seen through both.
	a, errA := os.Stat(filepath.Join(f.Root, "links/file"))
	b, errB := os.Stat(filepath.Join(f.Root, "links/hard"))
	if errA != nil || errB != nil || !os.SameFile(a, b) || a.Sys().(*syscall.Stat_t).Nlink != 2 {
		bad("hard link: %v %v same=%v", errA, errB, errA == nil && errB == nil && os.SameFile(a, b))
	}
	expectContent(&problems, filepath.Join(f.Root, "links/file"), "linked\nappended\n")
	// Symlinks.
	if t, err := os.Readlink(filepath.Join(f.Root, "links/sym")); err != nil || t != "file" {
		bad("links/sym -> %q (%v), want file", t, err)
	}
	if t, err := os.Readlink(filepath.Join(f.Root, "links/dirsym")); err != nil || t != "../links" {
		bad("links/dirsym -> %q (%v), want ../links", t, err)
	}
	// chmod, chown, touch -d, truncate.
	expectMode(&problems, filepath.Join(f.Root, "attrs/mode640"), 0o640)
	expectMode(&problems, filepath.Join(f.Root, "attrs/suid"), os.ModeSetuid|0o755)
	if st, err := os.Stat(filepath.Join(f.Root, "attrs/owned")); err != nil {
		bad("attrs/owned: %v", err)
	} else if s := st.Sys().(*syscall.Stat_t); s.Uid != 1234 || s.Gid != 5678 {
		bad("attrs/owned: owner %d:%d, want 1234:5678", s.Uid, s.Gid)
	}
	wantTime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if st, err := os.Stat(filepath.Join(f.Root, "attrs/dated")); err != nil || !st.ModTime().Equal(wantTime) {
		bad("attrs/dated: mtime %v (%v), want %v", modTime(st), err, wantTime)
	}
	if data, err := os.ReadFile(filepath.Join(f.Root, "attrs/trunc")); err != nil || len(data) != 1<<20 ||
		!bytes.Equal(data[:100], bytes.Repeat([]byte("a"), 100)) || !bytes.Equal(data[100:], make([]byte, 1<<20-100)) {
		bad("attrs/trunc: %d bytes (%v), want 100 x 'a' then zeros to 1 MiB", len(data), err)
	}
	// rm -rf
	expectAbsent(&problems, filepath.Join(f.Root, "rmtree"))
	// The read-only export is untouched.
	if haveRO {
		expectContent(&problems, filepath.Join(f.RO, "hello"), roHello+"\n")
		if ents, err := os.ReadDir(f.RO); err != nil || len(ents) != 1 {
			bad("read-only export: %d entries (%v), want only hello", len(ents), err)
		}
		expectMode(&problems, filepath.Join(f.RO, "hello"), 0o644)
	}
	// Nothing outside the exports changed, and the secret never reached
	// the guest.
	expectContent(&problems, filepath.Join(f.Outside, "secret"), f.Secret+"\n")
	if ents, err := os.ReadDir(f.Outside); err != nil || len(ents) != 1 {
		bad("outside/: %d entries (%v), want only secret", len(ents), err)
	}
	for _, s := range res.Steps {
		if strings.Contains(s.Detail, f.Secret) {
			bad("step %s printed the secret from outside the export", s.Name)
		}
	}
	sort.Strings(problems)
	return problems
}

func expectContent(problems *[]string, path, want string) {
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		*problems = append(*problems, fmt.Sprintf("%s: %q (%v), want %q", path, got, err, want))
	}
}

func expectAbsent(problems *[]string, path string) {
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		*problems = append(*problems, fmt.Sprintf("%s: still there (%v)", path, err))
	}
}

func expectMode(problems *[]string, path string, want os.FileMode) {
	st, err := os.Stat(path)
	if err != nil {
		*problems = append(*problems, fmt.Sprintf("%s: %v", path, err))
		return
	}
	if got := st.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky); got != want {
		*problems = append(*problems, fmt.Sprintf("%s: mode %v, want %v", path, got, want))
	}
}

func sizeOf(st os.FileInfo) interface{} {
	if st == nil {
		return "?"
	}
	return st.Size()
}

func modTime(st os.FileInfo) interface{} {
	if st == nil {
		return "?"
	}
	return st.ModTime().UTC()
}
