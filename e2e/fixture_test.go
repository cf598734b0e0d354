//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smallShape keeps the host-only tests fast.
var smallShape = shape{Sizes: []int{1, 4096, 65537}, Many: 50, Deep: 8, Create: 10}

// simulateGuest does on the host, directly in the exports, what
// workload.sh does in the guest, and returns the results a guest would
// report. It lets the host-side checks be tested without a guest.
func simulateGuest(t *testing.T, f *fixture) *guestResults {
	t.Helper()
	res := &guestResults{Done: true, Final: "E2E DONE", Sums: map[string]string{}}
	for k, v := range f.HostSums {
		res.Sums[k] = v
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	root := f.Root
	must(os.MkdirAll(filepath.Join(root, "guest"), 0o755))
	for _, n := range f.Shape.Sizes {
		rel := fmt.Sprintf("guest/g-%d", n)
		sum, err := writeRandom(filepath.Join(root, rel), n)
		must(err)
		res.Sums[rel] = sum
	}
	deep := filepath.Join(root, "deep")
	for i := 1; i <= f.Shape.Deep; i++ {
		deep = filepath.Join(deep, fmt.Sprint("d", i))
	}
	must(os.MkdirAll(deep, 0o755))
	must(os.MkdirAll(filepath.Join(root, "created"), 0o755))
	for i := 0; i < f.Shape.Create; i++ {
		must(os.WriteFile(filepath.Join(root, "created", fmt.Sprint("c", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644))
	}
	must(os.MkdirAll(filepath.Join(root, "ren/a/dir"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "ren/b/sub"), 0o755))
	must(os.WriteFile(filepath.Join(root, "ren/a/file"), []byte("rename-me\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "ren/a/dir/inner"), []byte("inner\n"), 0o644))
	must(os.Rename(filepath.Join(root, "ren/a/file"), filepath.Join(root, "ren/b/moved")))
	must(os.Rename(filepath.Join(root, "ren/a/dir"), filepath.Join(root, "ren/b/sub/dir2")))
	must(os.MkdirAll(filepath.Join(root, "links"), 0o755))
	must(os.WriteFile(filepath.Join(root, "links/file"), []byte("linked\nappended\n"), 0o644))
	must(os.Link(filepath.Join(root, "links/file"), filepath.Join(root, "links/hard")))
	must(os.Symlink("file", filepath.Join(root, "links/sym")))
	must(os.Symlink("../links", filepath.Join(root, "links/dirsym")))
	attrs := filepath.Join(root, "attrs")
	must(os.MkdirAll(attrs, 0o755))
	for _, n := range []string{"mode640", "suid", "owned", "dated"} {
		must(os.WriteFile(filepath.Join(attrs, n), nil, 0o644))
	}
	must(os.Chmod(filepath.Join(attrs, "mode640"), 0o640))
	must(os.Chmod(filepath.Join(attrs, "suid"), os.ModeSetuid|0o755))
	must(os.Chown(filepath.Join(attrs, "owned"), 1234, 5678))
	when := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	must(os.Chtimes(filepath.Join(attrs, "dated"), when, when))
	must(os.WriteFile(filepath.Join(attrs, "trunc"), []byte(strings.Repeat("a", 1000)), 0o644))
	must(os.Truncate(filepath.Join(attrs, "trunc"), 100))
	must(os.Truncate(filepath.Join(attrs, "trunc"), 1<<20))
	must(os.RemoveAll(filepath.Join(root, "rmtree")))
	for _, n := range workloadSteps {
		res.Steps = append(res.Steps, step{Name: n, Status: "OK"})
	}
	return res
}

// TestVerify proves the host-side checks pass for a correct run and catch
// each kind of wrong result. Needs root for chown.
func TestVerify(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown to 1234:5678)")
	}
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, f *fixture, res *guestResults)
		want   string // substring of a problem; "" means no problem
	}{
		// The simulated guest did everything right.
		{"correct run", nil, ""},
		// The guest read a host file wrongly.
		{"host file misread", func(t *testing.T, f *fixture, res *guestResults) {
			res.Sums["host/h-4096"] = strings.Repeat("0", 64)
		}, "guest read host/h-4096"},
		// A guest file arrived corrupted on the host.
		{"guest file corrupted", func(t *testing.T, f *fixture, res *guestResults) {
			p := filepath.Join(f.Root, "guest/g-65537")
			data, _ := os.ReadFile(p)
			data[len(data)-1] ^= 1
			os.WriteFile(p, data, 0o644)
		}, "guest/g-65537 on the host"},
		// A guest file is short on the host.
		{"guest file short", func(t *testing.T, f *fixture, res *guestResults) {
			os.Truncate(filepath.Join(f.Root, "guest/g-65537"), 4096)
		}, "guest/g-65537"},
		// The guest never reported a sum.
		{"sum missing", func(t *testing.T, f *fixture, res *guestResults) {
			delete(res.Sums, "guest/g-1")
		}, "no sum for guest/g-1"},
		// The setuid bit was lost on the way (the p9 v0.3.0 defect).
		{"setuid dropped", func(t *testing.T, f *fixture, res *guestResults) {
			os.Chmod(filepath.Join(f.Root, "attrs/suid"), 0o755)
		}, "attrs/suid: mode"},
		// chown did not reach the host.
		{"chown lost", func(t *testing.T, f *fixture, res *guestResults) {
			os.Chown(filepath.Join(f.Root, "attrs/owned"), 0, 0)
		}, "owner 0:0"},
		// touch -d did not reach the host.
		{"mtime lost", func(t *testing.T, f *fixture, res *guestResults) {
			now := time.Now()
			os.Chtimes(filepath.Join(f.Root, "attrs/dated"), now, now)
		}, "attrs/dated: mtime"},
		// The hard link became a copy.
		{"hard link is a copy", func(t *testing.T, f *fixture, res *guestResults) {
			p := filepath.Join(f.Root, "links/hard")
			os.Remove(p)
			os.WriteFile(p, []byte("linked\nappended\n"), 0o644)
		}, "hard link"},
		// rm -rf left something.
		{"rm -rf incomplete", func(t *testing.T, f *fixture, res *guestResults) {
			os.MkdirAll(filepath.Join(f.Root, "rmtree/a0"), 0o755)
		}, "rmtree: still there"},
		// The rename left the old name.
		{"rename copied", func(t *testing.T, f *fixture, res *guestResults) {
			os.WriteFile(filepath.Join(f.Root, "ren/a/file"), []byte("rename-me\n"), 0o644)
		}, "ren/a/file: still there"},
		// A write reached the read-only export.
		{"read-only export written", func(t *testing.T, f *fixture, res *guestResults) {
			os.WriteFile(filepath.Join(f.RO, "new"), nil, 0o644)
		}, "read-only export"},
		// Something was written outside the exports through a symlink.
		{"escape wrote outside", func(t *testing.T, f *fixture, res *guestResults) {
			os.WriteFile(filepath.Join(f.Outside, "secret"), []byte("pwned\n"), 0o644)
		}, "outside/secret"},
		// The secret reached the guest (it printed it).
		{"secret leaked", func(t *testing.T, f *fixture, res *guestResults) {
			res.Steps[len(res.Steps)-3].Detail = "read " + f.Secret
		}, "printed the secret"},
		// The truncate extension is not zero-filled.
		{"truncate garbage", func(t *testing.T, f *fixture, res *guestResults) {
			fh, _ := os.OpenFile(filepath.Join(f.Root, "attrs/trunc"), os.O_WRONLY, 0)
			fh.WriteAt([]byte("x"), 5000)
			fh.Close()
		}, "attrs/trunc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := newFixture(t.TempDir(), smallShape)
			if err != nil {
				t.Fatal(err)
			}
			res := simulateGuest(t, f)
			if tc.tamper != nil {
				tc.tamper(t, f, res)
			}
			problems := f.verify(res, true)
			if tc.want == "" {
				if len(problems) > 0 {
					t.Fatalf("problems for a correct run:\n%s", strings.Join(problems, "\n"))
				}
				return
			}
			if !strings.Contains(strings.Join(problems, "\n"), tc.want) {
				t.Errorf("problems %q lack %q", problems, tc.want)
			}
		})
	}
}

// TestVerifyUntouched: a fixture the guest never touched fails the checks
// (the checks do not pass vacuously).
func TestVerifyUntouched(t *testing.T) {
	f, err := newFixture(t.TempDir(), smallShape)
	if err != nil {
		t.Fatal(err)
	}
	res := &guestResults{Sums: map[string]string{}}
	if problems := f.verify(res, true); len(problems) < 10 {
		t.Errorf("only %d problems for a run that did nothing: %v", len(problems), problems)
	}
}
