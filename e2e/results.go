//go:build linux

package e2e

import (
	"strconv"
	"strings"
	"time"

	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/e2e/internal/guestcfg"
)

// errMalformed marks a results line the parser does not understand.
var errMalformed = errors.New("malformed results line")

// step is one workload step as the guest reported it.
type step struct {
	Name    string
	Status  string // guestcfg.StatusOK, StatusFail or StatusSkip
	Detail  string
	Elapsed time.Duration // guest-side, BEGIN to STEP
}

// guestResults is the parsed results port.
type guestResults struct {
	Steps    []step
	Sums     map[string]string // "SUM <path> <sha256>": path relative to the root export
	Final    string            // the E2E DONE / E2E FAILED line, "" when missing
	Done     bool              // the final line is E2E DONE
	Workload time.Duration     // guest-side time of the whole workload
	Boot     time.Duration     // guest uptime when the workload started
}

// step finds a step by name.
func (g *guestResults) step(name string) (step, bool) {
	for _, s := range g.Steps {
		if s.Name == name {
			return s, true
		}
	}
	return step{}, false
}

// parseResults reads the results port. Blank lines are ignored; anything
// else that is not a result line is an error (the port carries nothing
// else).
func parseResults(text string) (*guestResults, error) {
	g := &guestResults{Sums: map[string]string{}}
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimRight(raw, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		bad := func(why string) error {
			return errors.Wrapf(errMalformed, "line %d %q: %s", i+1, line, why)
		}
		switch {
		case strings.HasPrefix(line, guestcfg.PrefixStep):
			f := strings.SplitN(strings.TrimPrefix(line, guestcfg.PrefixStep), " ", 4)
			if len(f) < 3 || !strings.HasPrefix(f[2], "ns=") {
				return nil, bad("want STEP <name> <status> ns=<n> [detail]")
			}
			ns, err := strconv.ParseInt(strings.TrimPrefix(f[2], "ns="), 10, 64)
			if err != nil || ns < 0 {
				return nil, bad("bad ns=")
			}
			switch f[1] {
			case guestcfg.StatusOK, guestcfg.StatusFail, guestcfg.StatusSkip:
			default:
				return nil, bad("unknown status " + f[1])
			}
			s := step{Name: f[0], Status: f[1], Elapsed: time.Duration(ns)}
			if len(f) == 4 {
				s.Detail = f[3]
			}
			g.Steps = append(g.Steps, s)
		case strings.HasPrefix(line, guestcfg.PrefixSum):
			f := strings.Fields(strings.TrimPrefix(line, guestcfg.PrefixSum))
			if len(f) != 2 || len(f[1]) != 64 {
				return nil, bad("want SUM <path> <sha256>")
			}
			g.Sums[f[0]] = f[1]
		case strings.HasPrefix(line, guestcfg.LineDone), strings.HasPrefix(line, guestcfg.LineFailed):
			if g.Final != "" {
				return nil, bad("second final line")
			}
			g.Final = line
			g.Done = strings.HasPrefix(line, guestcfg.LineDone)
			for _, kv := range strings.Fields(line) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					continue
				}
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					continue
				}
				switch k {
				case "ns":
					g.Workload = time.Duration(n)
				case "boot_ns":
					g.Boot = time.Duration(n)
				}
			}
		default:
			return nil, bad("unknown line")
		}
	}
	return g, nil
}
