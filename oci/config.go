package oci

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/pkg/errors"

	"github.com/fsd-launcher/fsd-launcher/config"
)

// Sentinels of Config.
var (
	// ErrNoBase reports a nil base configuration.
	ErrNoBase = errors.New("no base configuration")
	// ErrUnsupportedTag reports a destination that the launcher's --mount
	// syntax cannot carry as a tag (',', '=', white space, control
	// characters).
	ErrUnsupportedTag = errors.New("destination cannot be a mount tag")
	// ErrUnsupportedSource reports a bind source holding ',', which the
	// launcher's --mount syntax cannot carry.
	ErrUnsupportedSource = errors.New("source cannot be passed to the daemon")
)

// Config returns a launcher configuration serving the bundle through a
// listening socket (`fsd-launcher start --bundle DIR`): a copy of base in
// which the bundle decides the exports. shared_dir is the root, readonly
// is root.readonly, and there is one [[mount]] per served bind mount, in
// spec order (tag = destination); base's own shared_dir, readonly and
// mounts are replaced. Every other key (socket_path, limits, log, sandbox,
// timeouts, daemon) is base's. The result is validated.
//
// The launcher configuration has no place for a mount's share group yet:
// with a socket, mounts of one share=pod volume are separate attach points
// over the same directory (see README.md).
func (b *Bundle) Config(base *config.Config) (*config.Config, error) {
	if base == nil {
		return nil, errors.WithStack(ErrNoBase)
	}
	c := *base
	c.Daemon.Args = append([]string(nil), base.Daemon.Args...)
	c.SharedDir = b.Root
	c.ReadOnly = b.ReadOnly
	c.Mounts = nil
	for _, e := range b.exports {
		if e.Mount == RootMount {
			continue
		}
		field := fmt.Sprintf("mounts[%d]", e.Mount)
		if i := strings.IndexFunc(e.Tag, badTagRune); i >= 0 {
			return nil, b.specErr(field+".destination", ErrUnsupportedTag, fmt.Sprintf("%q has %q", e.Tag, e.Tag[i:i+1]))
		}
		if strings.ContainsRune(e.Source, ',') {
			return nil, b.specErr(field+".source", ErrUnsupportedSource, fmt.Sprintf("%q has ','", e.Source))
		}
		c.Mounts = append(c.Mounts, config.Mount{Tag: e.Tag, Source: e.Source, ReadOnly: e.ReadOnly, Share: e.ShareKey})
	}
	if err := c.Validate(); err != nil {
		return nil, errors.WithMessagef(err, "bundle %s", b.Dir)
	}
	return &c, nil
}

// badTagRune reports the runes a mount tag may not hold (config.Validate's
// rule, checked here too so the error names the bundle's mount).
func badTagRune(r rune) bool {
	return r == ',' || r == '=' || r == 0 || unicode.IsSpace(r) || unicode.IsControl(r)
}
