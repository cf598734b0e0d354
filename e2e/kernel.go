//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// errNoKernel means no usable guest kernel is installed.
var errNoKernel = errors.New("no guest kernel with modules found")

// kernel is a guest kernel image and its module tree.
type kernel struct {
	Image   string // /boot/vmlinuz-<version>
	Version string
	ModDir  string // /lib/modules/<version>
}

// findKernel picks the guest kernel: $E2E_KERNEL when set, else the running
// kernel's image when it is in /boot, else the newest /boot/vmlinuz-* whose
// modules are installed.
func findKernel() (kernel, error) {
	if img := os.Getenv("E2E_KERNEL"); img != "" {
		ver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		k := kernel{Image: img, Version: ver, ModDir: filepath.Join("/lib/modules", ver)}
		return k, k.check()
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		ver := unix.ByteSliceToString(uts.Release[:])
		k := kernel{Image: "/boot/vmlinuz-" + ver, Version: ver, ModDir: "/lib/modules/" + ver}
		if k.check() == nil {
			return k, nil
		}
	}
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(images)))
	for _, img := range images {
		ver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		k := kernel{Image: img, Version: ver, ModDir: filepath.Join("/lib/modules", ver)}
		if k.check() == nil {
			return k, nil
		}
	}
	return kernel{}, errors.Wrap(errNoKernel, "looked at $E2E_KERNEL, the running kernel and /boot/vmlinuz-*")
}

// check verifies that the image is readable and the module tree has a
// modules.dep.
func (k kernel) check() error {
	f, err := os.Open(k.Image)
	if err != nil {
		return errors.Wrapf(errNoKernel, "kernel image %s: %v", k.Image, err)
	}
	f.Close()
	if _, err := os.Stat(filepath.Join(k.ModDir, "modules.dep")); err != nil {
		return errors.Wrapf(errNoKernel, "modules of %s: %v", k.Version, err)
	}
	return nil
}

// module is one kernel module to load in the guest.
type module struct {
	Name string // canonical name: "9pnet_fd"
	Path string // host path of the (possibly compressed) .ko
}

// moduleName turns "kernel/net/9p/9pnet-fd.ko.xz" into "9pnet_fd".
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// resolveModules returns the modules to load for the wanted ones, with
// every dependency before its users, read from modules.dep. Modules built
// into the kernel (modules.builtin) are left out.
func (k kernel) resolveModules(wanted []string) ([]module, error) {
	deps, err := readModulesDep(filepath.Join(k.ModDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if f, err := os.Open(filepath.Join(k.ModDir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			builtin[moduleName(sc.Text())] = true
		}
		f.Close()
	}
	byName := map[string]string{}
	for p := range deps {
		byName[moduleName(p)] = p
	}
	var out []module
	seen := map[string]bool{}
	var visit func(rel string, chain []string) error
	visit = func(rel string, chain []string) error {
		name := moduleName(rel)
		if seen[name] {
			return nil
		}
		for _, c := range chain {
			if c == name {
				return errors.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
			}
		}
		for _, d := range deps[rel] {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		seen[name] = true
		out = append(out, module{Name: name, Path: filepath.Join(k.ModDir, rel)})
		return nil
	}
	for _, w := range wanted {
		name := strings.ReplaceAll(w, "-", "_")
		rel, ok := byName[name]
		if !ok {
			if builtin[name] {
				continue
			}
			return nil, errors.Errorf("module %s: neither in %s/modules.dep nor built in", w, k.ModDir)
		}
		if err := visit(rel, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readModulesDep parses modules.dep: "path: dep dep ...".
func readModulesDep(path string) (map[string][]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrapf(err, "read %s", path)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		out[strings.TrimSpace(mod)] = strings.Fields(rest)
	}
	return out, nil
}

// readModule returns a module's ELF bytes, decompressing .ko.gz in
// process and .ko.xz / .ko.zst with the xz / zstd tools (busybox insmod and
// a kernel without module decompression need plain .ko files).
func readModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		data, err := os.ReadFile(path)
		return data, errors.Wrapf(err, "read module %s", path)
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, errors.Wrapf(err, "open module %s", path)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, errors.Wrapf(err, "gunzip module %s", path)
		}
		data, err := io.ReadAll(zr)
		return data, errors.Wrapf(err, "gunzip module %s", path)
	case strings.HasSuffix(path, ".ko.xz"):
		return decompressWith("xz", path)
	case strings.HasSuffix(path, ".ko.zst"):
		return decompressWith("zstd", path)
	}
	return nil, errors.Errorf("module %s: unknown compression", path)
}

func decompressWith(tool, path string) ([]byte, error) {
	var out, stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", path)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, errors.Wrapf(err, "%s -dc %s: %s", tool, path, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}
