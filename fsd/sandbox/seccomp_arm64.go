package sandbox

// archSyscalls are the allowlist's entries whose names differ on arm64:
// go-seccomp-bpf's table calls newfstatat "fstatat" there.
var archSyscalls = []string{"fstatat"}
