package oci

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pkg/errors"
)

// Annotation prefixes of pod mount hints. A hint is a set of annotations
// sharing a name: MountPrefix + "<name>.<field>" (gVisor's current form) or
// LegacyMountPrefix + "<name>/<field>" (the form older gVisor shims wrote).
// Both forms may be mixed; a field given in both must have the same value.
const (
	MountPrefix       = "dev.gvisor.spec.mount."
	LegacyMountPrefix = "gvisor.dev/spec/mount/"
)

// Hint field names.
const (
	FieldSource  = "source"
	FieldType    = "type"
	FieldShare   = "share"
	FieldOptions = "options"
)

// Mount types a hint may name.
const (
	TypeBind  = "bind"
	TypeTmpfs = "tmpfs"
)

// Share says who may see and change a hinted volume (field "share").
type Share int

// Share values. The zero value is not a valid share.
const (
	// ShareContainer: one container uses the volume, nobody outside the
	// sandbox changes it. fsd serves each mount with its own attach point
	// (the default for mounts without a hint).
	ShareContainer Share = iota + 1
	// SharePod: several containers of the pod use the volume, nobody
	// outside the sandbox changes it. fsd serves it once: every mount and
	// every connection naming it share one attach point.
	SharePod
	// ShareShared: processes outside the pod may change the volume too. fsd
	// serves it once, like SharePod; it caches nothing, so outside changes
	// are seen by the next request.
	ShareShared
)

// String returns the annotation value of s ("container", "pod", "shared").
func (s Share) String() string {
	switch s {
	case ShareContainer:
		return "container"
	case SharePod:
		return "pod"
	case ShareShared:
		return "shared"
	default:
		return fmt.Sprintf("Share(%d)", int(s))
	}
}

// parseShare maps an annotation value to a Share.
func parseShare(v string) (Share, bool) {
	switch v {
	case "container":
		return ShareContainer, true
	case "pod":
		return SharePod, true
	case "shared":
		return ShareShared, true
	}
	return 0, false
}

// Sentinels of hint validation; a *HintError wraps one of them.
var (
	ErrMalformedKey    = errors.New("malformed mount hint key")
	ErrUnknownField    = errors.New("unknown mount hint field")
	ErrInvalidShare    = errors.New("invalid share (want container, pod or shared)")
	ErrInvalidType     = errors.New("invalid type (want bind or tmpfs)")
	ErrEmptySource     = errors.New("empty source")
	ErrMissingField    = errors.New("missing required field")
	ErrDuplicateSource = errors.New("two mount hints with the same source")
	ErrConflictingKeys = errors.New("field set differently by the two annotation forms")
)

// HintError reports an invalid pod mount hint. Errors.Is matches its Err
// against the sentinels above.
type HintError struct {
	// Hint is the hint's name (empty when the key is too malformed to
	// carry one).
	Hint string
	// Key is the annotation key at fault, when there is one.
	Key string
	// Detail adds what was wrong (the value, the missing fields, the other
	// hint).
	Detail string
	// Err is one of the sentinels.
	Err error
}

// Error names the hint, the key and what was wrong.
func (e *HintError) Error() string {
	var b strings.Builder
	b.WriteString("mount hint")
	if e.Hint != "" {
		fmt.Fprintf(&b, " %q", e.Hint)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, " (annotation %q)", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap returns the sentinel.
func (e *HintError) Unwrap() error { return e.Err }

// Hint is one validated pod mount hint.
type Hint struct {
	// Name is the hint's name (the <name> of its annotations).
	Name string
	// Source is the host path of the volume, as written.
	Source string
	// Type is TypeBind or TypeTmpfs.
	Type string
	// Share says who else uses the volume.
	Share Share
	// Options are the mount options of the volume (field "options", split on
	// ','), empty entries dropped.
	Options []string
}

// ReadOnly reports whether the hint's options make the volume read-only
// (the last of "ro" and "rw" wins, as with mount(8)).
func (h *Hint) ReadOnly() bool { return readOnly(h.Options) }

// Hints is the set of pod mount hints of one spec. The zero value and nil
// hold no hints.
type Hints struct {
	byName map[string]*Hint
}

// Len returns the number of hints.
func (h *Hints) Len() int {
	if h == nil {
		return 0
	}
	return len(h.byName)
}

// Names returns the hint names, sorted.
func (h *Hints) Names() []string {
	if h == nil {
		return nil
	}
	names := make([]string, 0, len(h.byName))
	for n := range h.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Get returns a copy of the hint named name.
func (h *Hints) Get(name string) (Hint, bool) {
	if h == nil {
		return Hint{}, false
	}
	m, ok := h.byName[name]
	if !ok {
		return Hint{}, false
	}
	c := *m
	c.Options = append([]string(nil), m.Options...)
	return c, true
}

// ForSource returns the hint whose source, made absolute against base when
// relative and cleaned, equals source (an absolute, clean path).
func (h *Hints) ForSource(base, source string) (Hint, bool) {
	if h == nil {
		return Hint{}, false
	}
	for _, n := range h.Names() {
		if absPath(base, h.byName[n].Source) == source {
			return h.Get(n)
		}
	}
	return Hint{}, false
}

// hintKey splits an annotation key into hint name and field. ok is false
// when the key has neither prefix (not a hint); a key with a prefix but not
// exactly "<name><sep><field>" is ErrMalformedKey.
func hintKey(key string) (name, field string, ok bool, err error) {
	var rest, sep string
	switch {
	case strings.HasPrefix(key, MountPrefix):
		rest, sep = key[len(MountPrefix):], "."
	case strings.HasPrefix(key, LegacyMountPrefix):
		rest, sep = key[len(LegacyMountPrefix):], "/"
	default:
		return "", "", false, nil
	}
	parts := strings.Split(rest, sep)
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		// Name the hint when the key still shows one.
		n := ""
		if len(parts) > 0 {
			n = parts[0]
		}
		return "", "", true, &HintError{Hint: n, Key: key, Err: ErrMalformedKey,
			Detail: fmt.Sprintf("want %s<name>%s<field>", key[:len(key)-len(rest)], sep)}
	}
	return parts[0], parts[1], true, nil
}

// rawHint collects a hint's fields and the key each came from.
type rawHint struct {
	fields map[string]string
	keys   map[string]string
}

// ParseHints reads the pod mount hints from a spec's annotations and
// validates them the way gVisor does, but strictly: where gVisor logs and
// drops a bad hint, ParseHints fails, since serving a pod volume as if it
// were private is a silent change of meaning. Each error is a *HintError
// naming the hint: a malformed key, an unknown field, an invalid share or
// type, an empty source, a missing source/type/share, a field given
// differently under both prefixes, or two hints with the same source.
// Annotations without either prefix are ignored.
func ParseHints(annotations map[string]string) (*Hints, error) {
	// Visit keys in order so the first error reported is deterministic.
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	raw := map[string]*rawHint{}
	for _, k := range keys {
		name, field, ok, err := hintKey(k)
		if !ok {
			continue
		}
		if err != nil {
			return nil, err
		}
		switch field {
		case FieldSource, FieldType, FieldShare, FieldOptions:
		default:
			return nil, &HintError{Hint: name, Key: k, Err: ErrUnknownField,
				Detail: fmt.Sprintf("%q (want source, type, share or options)", field)}
		}
		r := raw[name]
		if r == nil {
			r = &rawHint{fields: map[string]string{}, keys: map[string]string{}}
			raw[name] = r
		}
		v := annotations[k]
		if prev, dup := r.fields[field]; dup && prev != v {
			return nil, &HintError{Hint: name, Key: k, Err: ErrConflictingKeys,
				Detail: fmt.Sprintf("%q here, %q in %q", v, prev, r.keys[field])}
		}
		r.fields[field] = v
		r.keys[field] = k
	}

	hints := &Hints{byName: make(map[string]*Hint, len(raw))}
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h, err := buildHint(n, raw[n])
		if err != nil {
			return nil, err
		}
		hints.byName[n] = h
	}

	// Two hints naming one source would give one volume two meanings.
	bySource := map[string]string{}
	for _, n := range names {
		src := filepath.Clean(hints.byName[n].Source)
		if other, dup := bySource[src]; dup {
			return nil, &HintError{Hint: n, Err: ErrDuplicateSource,
				Detail: fmt.Sprintf("%q and %q both name %q", other, n, src)}
		}
		bySource[src] = n
	}
	return hints, nil
}

// buildHint validates one hint's fields.
func buildHint(name string, r *rawHint) (*Hint, error) {
	var missing []string
	for _, f := range []string{FieldSource, FieldType, FieldShare} {
		if _, ok := r.fields[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return nil, &HintError{Hint: name, Err: ErrMissingField, Detail: strings.Join(missing, ", ")}
	}
	h := &Hint{Name: name, Source: r.fields[FieldSource], Type: r.fields[FieldType]}
	if h.Source == "" {
		return nil, &HintError{Hint: name, Key: r.keys[FieldSource], Err: ErrEmptySource}
	}
	if h.Type != TypeBind && h.Type != TypeTmpfs {
		return nil, &HintError{Hint: name, Key: r.keys[FieldType], Err: ErrInvalidType,
			Detail: fmt.Sprintf("%q", h.Type)}
	}
	share, ok := parseShare(r.fields[FieldShare])
	if !ok {
		return nil, &HintError{Hint: name, Key: r.keys[FieldShare], Err: ErrInvalidShare,
			Detail: fmt.Sprintf("%q", r.fields[FieldShare])}
	}
	h.Share = share
	for _, o := range strings.Split(r.fields[FieldOptions], ",") {
		if o = strings.TrimSpace(o); o != "" {
			h.Options = append(h.Options, o)
		}
	}
	return h, nil
}

// readOnly reports whether mount options make a mount read-only: the last
// of "ro" and "rw" wins.
func readOnly(opts []string) bool {
	ro := false
	for _, o := range opts {
		switch o {
		case "ro":
			ro = true
		case "rw":
			ro = false
		}
	}
	return ro
}
