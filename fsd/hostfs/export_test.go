package hostfs

// Test-only options forcing the fallbacks that older kernels (or a
// process without CAP_DAC_READ_SEARCH) take.

// withoutOpenat2 walks with openat(O_NOFOLLOW) as on kernels before 5.6.
func withoutOpenat2() Option { return func(fs *FS) { fs.noOpenat2 = true } }

// withoutXattrat reaches xattrs through fds reopened via /proc/self/fd, as
// on kernels before 6.13.
func withoutXattrat() Option { return func(fs *FS) { fs.noXattrat = true } }

// withoutEmptyPath links through /proc/self/fd and sets times through
// /proc/self/fd or the parent, as without CAP_DAC_READ_SEARCH or on
// kernels whose utimensat lacks AT_EMPTY_PATH.
func withoutEmptyPath() Option { return func(fs *FS) { fs.noEmptyPath = true } }
