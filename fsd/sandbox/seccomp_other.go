//go:build !amd64 && !arm64

package sandbox

// archSyscalls is nil where no allowlist has been traced: the automatic mode
// falls back to none and the confining modes fail with ErrUnsupportedArch,
// rather than install a filter nobody checked.
var archSyscalls []string
