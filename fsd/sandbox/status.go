package sandbox

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/pkg/errors"
)

// Status is what /proc/PID/status says about a process's confinement.
type Status struct {
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
	NoNewPrivs                             bool
	// Seccomp is 0 (off), 1 (strict) or 2 (filter).
	Seccomp int
	// Groups are the supplementary group ids.
	Groups []int
}

// ReadStatus reads /proc/PID/status (PID 0: this process).
func ReadStatus(pid int) (Status, error) {
	p := "/proc/self/status"
	if pid != 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	f, err := os.Open(p)
	if err != nil {
		return Status{}, errors.WithStack(err)
	}
	defer f.Close()
	st, err := ParseStatus(f)
	return st, errors.Wrapf(err, "parse %s", p)
}

// ParseStatus parses the text of a /proc/PID/status file. Every field of
// Status must be present.
func ParseStatus(r io.Reader) (Status, error) {
	var st Status
	caps := map[string]*uint64{"CapInh": &st.CapInh, "CapPrm": &st.CapPrm, "CapEff": &st.CapEff, "CapBnd": &st.CapBnd, "CapAmb": &st.CapAmb}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb":
			*caps[key], err = strconv.ParseUint(val, 16, 64)
		case "NoNewPrivs":
			var n int
			n, err = strconv.Atoi(val)
			st.NoNewPrivs = n == 1
		case "Seccomp":
			st.Seccomp, err = strconv.Atoi(val)
		case "Groups":
			st.Groups = []int{}
			for _, g := range strings.Fields(val) {
				var id int
				if id, err = strconv.Atoi(g); err != nil {
					break
				}
				st.Groups = append(st.Groups, id)
			}
		default:
			continue
		}
		if err != nil {
			return Status{}, errors.Wrapf(err, "field %s", key)
		}
		seen[key] = true
	}
	if err := sc.Err(); err != nil {
		return Status{}, errors.WithStack(err)
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Groups"} {
		if !seen[k] {
			return Status{}, errors.Errorf("field %s missing", k)
		}
	}
	return st, nil
}
