// Package oci serves an OCI bundle the way gVisor's gofer does: it reads a
// bundle's config.json, and turns its root filesystem and bind mounts into
// the exports fsd serves, applying the pod mount hints found in the spec's
// annotations.
//
// The export list is the contract shared by both ends of a gofer-style
// launch: the root first (aname "/"), then every served bind mount in spec
// order (aname = its destination). `fsd-launcher serve --bundle DIR
// --io-fds ...` hands export i to the i-th descriptor, and whoever created
// the socket pairs (launcher.StartGofer, or a runtime doing what runsc's
// createGoferProcess does) gets the sandbox ends in the same order.
//
// Paths. root.path and every bind mount source are taken relative to the
// bundle directory when they are not absolute, as runsc's specutils does
// (runc resolves root.path that way too). A relative destination is taken
// relative to "/", as runc does; destinations are cleaned, so "/data/" and
// "/data" are the same mount point.
//
// Which mounts are served: a mount whose type is "bind", or whose options
// contain "bind" or "rbind" (the OCI rule for bind mounts, whatever the
// type says). Other mounts (proc, sysfs, tmpfs, devpts, mqueue, ...) belong
// to the guest and are not served; neither is a bind mount whose source a
// type=tmpfs pod mount hint names (the guest mounts a tmpfs there), nor a
// bind mount of a single file such as /etc/hosts (fsd serves directory
// trees; Bundle.Unserved lists what was left out and why). "ro" in
// a mount's options (the last of ro/rw wins) makes the export read-only;
// root.readonly does the same for the root.
//
// See README.md in this directory for what each share value of a pod mount
// hint changes in fsd.
package oci

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pkg/errors"
)

// ConfigName is the file of a bundle that holds the spec.
const ConfigName = "config.json"

// RootTag is the aname of the root export. fsd also attaches it for "".
const RootTag = "/"

// RootMount is Export.Mount for the root export.
const RootMount = -1

// Sentinels of bundle validation; a *SpecError wraps one of them (or a
// *HintError for a bad annotation).
var (
	ErrNoRoot               = errors.New("no root filesystem")
	ErrRootNotDir           = errors.New("not a directory")
	ErrBadDestination       = errors.New("invalid destination")
	ErrDuplicateDestination = errors.New("two served mounts with the same destination")
	ErrNoSource             = errors.New("bind mount without a source")
	ErrNotExist             = errors.New("does not exist")
	ErrHintConflict         = errors.New("mount conflicts with its pod mount hint")
)

// SpecError reports an invalid field of a bundle's config.json. Errors.Is
// matches Err.
type SpecError struct {
	// Config is the path of the config.json at fault.
	Config string
	// Field names the field, as a JSON path: "root.path",
	// "mounts[3].destination", "annotations".
	Field string
	// Detail says what was wrong (the value, the other mount).
	Detail string
	// Err is a sentinel of this package, a *HintError, or a host error.
	Err error
}

// Error names config.json and the field.
func (e *SpecError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s: %v", e.Config, e.Field, e.Err)
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap returns Err.
func (e *SpecError) Unwrap() error { return e.Err }

// Export is one attach point a bundle asks fsd to serve.
type Export struct {
	// Tag is the aname the guest attaches: RootTag for the root, otherwise
	// the mount's destination, cleaned and absolute. Tags are unique within
	// a bundle, and fsd matches them exactly, so "/data" and "/data/sub" are
	// two separate exports and neither shadows the other.
	Tag string
	// Source is the host directory, absolute and clean.
	Source string
	// ReadOnly makes the export read-only.
	ReadOnly bool
	// Mount is the index of the mount in Spec.Mounts, or RootMount.
	Mount int
	// Hint is the name of the pod mount hint applied to the mount, if any.
	Hint string
	// Share is the hint's share value (ShareContainer without a hint).
	Share Share
	// ShareKey groups exports that fsd serves with one attach point (one
	// hostfs.FS: one set of pinned fds and one QID space for every
	// connection). Empty means an attach point of its own. Exports with the
	// same non-empty key always have the same Source and ReadOnly: a
	// read-only and a read-write mount of one pod volume get two keys,
	// because read-only is a property of the attach point.
	ShareKey string
}

// Bundle is a loaded, validated OCI bundle.
type Bundle struct {
	// Dir is the bundle directory, absolute and clean.
	Dir string
	// ConfigPath is Dir/config.json.
	ConfigPath string
	// Spec is the decoded config.json, unchanged. Exports are computed when
	// the bundle is loaded: changing Spec afterwards does not change them.
	Spec *specs.Spec
	// Root is root.path resolved against Dir.
	Root string
	// ReadOnly is root.readonly.
	ReadOnly bool
	// Hints are the pod mount hints from Spec.Annotations.
	Hints *Hints

	exports  []Export
	unserved []Unserved
}

// Reasons a mount is not served (Unserved.Reason).
const (
	ReasonNotBind  = "not a bind mount"
	ReasonTmpfs    = "a type=tmpfs mount hint names its source (the guest mounts a tmpfs)"
	ReasonFileBind = "source is not a directory (fsd serves directory trees only)"
)

// Unserved is a mount of the spec that fsd does not serve.
type Unserved struct {
	// Mount is the index in Spec.Mounts.
	Mount int
	// Destination and Type are the mount's, as written.
	Destination, Type string
	// Reason is one of the Reason constants.
	Reason string
}

// LoadBundle reads DIR/config.json and validates what fsd needs of it: a
// root path naming a directory, the pod mount hints, and the bind mounts
// (a source that exists, a destination other than "/", no destination
// served twice, no conflict with a hint). Errors name config.json and the
// field.
func LoadBundle(dir string) (*Bundle, error) {
	if dir == "" {
		return nil, errors.New("bundle directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, errors.Wrapf(err, "bundle directory %q", dir)
	}
	b := &Bundle{Dir: abs, ConfigPath: filepath.Join(abs, ConfigName)}
	data, err := readConfig(b.ConfigPath)
	if err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, errors.Wrapf(err, "parse bundle config %s", b.ConfigPath)
	}
	b.Spec = &spec

	if spec.Root == nil || spec.Root.Path == "" {
		return nil, b.specErr("root.path", ErrNoRoot, "")
	}
	b.Root = absPath(b.Dir, spec.Root.Path)
	b.ReadOnly = spec.Root.Readonly
	if err := checkDir(b.Root); err != nil {
		return nil, b.specErr("root.path", err, b.Root)
	}

	if b.Hints, err = ParseHints(spec.Annotations); err != nil {
		return nil, b.specErr("annotations", err, "")
	}
	if b.exports, err = b.buildExports(); err != nil {
		return nil, err
	}
	return b, nil
}

// Exports returns a copy of the bundle's exports: the root first, then the
// served bind mounts in spec order. This is the order of --io-fds.
func (b *Bundle) Exports() []Export {
	return append([]Export(nil), b.exports...)
}

// Unserved returns the mounts that are not served, in spec order, and why:
// mounts the guest provides itself (proc, tmpfs, ...), bind mounts turned
// into tmpfs by a hint, and bind mounts of single files (/etc/hosts and
// the like), which the runtime must provide another way. A launcher should
// log them.
func (b *Bundle) Unserved() []Unserved {
	return append([]Unserved(nil), b.unserved...)
}

// buildExports validates the mounts and builds the export list.
func (b *Bundle) buildExports() ([]Export, error) {
	exports := []Export{{
		Tag: RootTag, Source: b.Root, ReadOnly: b.ReadOnly,
		Mount: RootMount, Share: ShareContainer,
	}}
	byTag := map[string]int{} // tag -> mount index
	for i, m := range b.Spec.Mounts {
		skip := func(reason string) {
			b.unserved = append(b.unserved, Unserved{Mount: i, Destination: m.Destination, Type: m.Type, Reason: reason})
		}
		if !IsBind(m) {
			skip(ReasonNotBind)
			continue
		}
		field := fmt.Sprintf("mounts[%d]", i)
		tag, why := cleanDestination(m.Destination)
		if why != "" {
			return nil, b.specErr(field+".destination", ErrBadDestination, fmt.Sprintf("%q %s", m.Destination, why))
		}
		if m.Source == "" {
			return nil, b.specErr(field+".source", ErrNoSource, "destination "+tag)
		}
		src := absPath(b.Dir, m.Source)
		st, err := os.Stat(src)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				err = ErrNotExist
			} else {
				err = errors.WithStack(err)
			}
			return nil, b.specErr(field+".source", err, fmt.Sprintf("%s (destination %s)", src, tag))
		}
		e := Export{Tag: tag, Source: src, ReadOnly: readOnly(m.Options), Mount: i, Share: ShareContainer}

		if h, ok := b.Hints.ForSource(b.Dir, src); ok {
			if h.Type == TypeTmpfs {
				// The guest mounts a tmpfs at the destination: nothing to
				// serve (and nothing to check for shadowing).
				skip(ReasonTmpfs)
				continue
			}
			if h.ReadOnly() && !e.ReadOnly {
				return nil, b.specErr(field+".options", ErrHintConflict,
					fmt.Sprintf("destination %s is read-write but hint %q makes %s read-only", tag, h.Name, src))
			}
			e.Hint, e.Share = h.Name, h.Share
			if h.Share != ShareContainer {
				e.ShareKey = shareKey(h.Name, e.ReadOnly)
			}
		}

		if !st.IsDir() {
			skip(ReasonFileBind)
			continue
		}
		if j, dup := byTag[tag]; dup {
			return nil, b.specErr(field+".destination", ErrDuplicateDestination,
				fmt.Sprintf("mounts[%d] and mounts[%d] both mount %s", j, i, tag))
		}
		byTag[tag] = i
		exports = append(exports, e)
	}
	return exports, nil
}

// shareKey is the ShareKey of a shared hint's exports with one mode.
func shareKey(hint string, ro bool) string {
	if ro {
		return "hint/" + hint + "/ro"
	}
	return "hint/" + hint + "/rw"
}

// specErr builds a *SpecError for this bundle.
func (b *Bundle) specErr(field string, err error, detail string) error {
	return &SpecError{Config: b.ConfigPath, Field: field, Err: err, Detail: detail}
}

// MaxConfigSize bounds the size of config.json (real ones are a few KiB).
const MaxConfigSize = 16 << 20

// ErrConfigTooLarge reports a config.json larger than MaxConfigSize.
var ErrConfigTooLarge = errors.New("bundle config too large")

// readConfig reads config.json, at most MaxConfigSize bytes of it.
func readConfig(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, errors.Wrapf(err, "read bundle config %s", p)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, errors.Wrapf(err, "read bundle config %s", p)
	}
	if len(data) > MaxConfigSize {
		return nil, errors.Wrapf(ErrConfigTooLarge, "%s is over %d bytes", p, MaxConfigSize)
	}
	return data, nil
}

// IsBind reports whether m is a bind mount: type "bind", or options
// containing "bind" or "rbind" (for those the OCI spec calls the type a
// dummy).
func IsBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// cleanDestination returns the export tag of a mount destination: cleaned,
// made absolute against "/". When the destination cannot be served, why
// says so (an empty destination, a NUL, the root itself).
func cleanDestination(dst string) (tag, why string) {
	switch {
	case dst == "":
		return "", "is empty"
	case strings.IndexByte(dst, 0) >= 0:
		return "", "contains NUL"
	}
	tag = filepath.Clean("/" + dst)
	if tag == RootTag {
		return "", "is the root (serve it with root.path)"
	}
	return tag, ""
}

// absPath resolves p against base when it is relative, and cleans it.
func absPath(base, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}

// checkDir reports whether p is an existing directory (following symlinks:
// the bundle is written by the runtime, a trusted party).
func checkDir(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ErrNotExist
		}
		return errors.WithStack(err)
	}
	if !st.IsDir() {
		return ErrRootNotDir
	}
	return nil
}
