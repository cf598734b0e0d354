package sandbox

// archSyscalls are the allowlist's entries whose names differ by
// architecture: fstatat is "newfstatat" in amd64's table.
var archSyscalls = []string{"newfstatat"}
