// Package e2e proves the whole stack with a real guest kernel: `make e2e`
// boots a Debian kernel under QEMU (TCG) with a busybox initramfs, mounts
// the share over 9P2000.L (served by fsd, started with `fsd-launcher start`)
// and over virtio-fs (QEMU's virtiofsd, started by the same launcher), runs
// one workload script in the guest and checks the results from the host.
//
// The pieces:
//
//   - e2e/guest: the guest's /init (static Go): loads modules, relays 9P
//     between virtio-serial ports and socketpairs, runs workload.sh, times
//     its steps, powers off.
//   - workload.sh: the guest workload; one "STEP <name> OK|FAIL" line per
//     step on a results port of its own.
//   - e2e/internal/guestcfg: the host/guest contract (the guest's JSON
//     configuration and the result line formats).
//   - this package: builds the initramfs (cpio written here, modules taken
//     from /lib/modules of the Debian kernel), prepares the exported
//     directories, starts the daemon, runs QEMU with a hard timeout, parses
//     the results and checks every effect on the host, and proves that no
//     QEMU, daemon or socket is left behind.
//
// Run it with `make e2e` (e2e/install-deps.sh installs the Debian packages
// that are missing, then `go test ./e2e/...`). The tests need root (the
// servers must chown; virtiofsd sandboxes itself) and build fsd-launcher
// and the guest helper themselves.
//
// Environment:
//
//	FSD_E2E_REQUIRED=1  missing QEMU/kernel/busybox fail the tests instead of skipping them (CI)
//	E2E_DAEMON=standin  use diod (9P) and a directly started virtiofsd instead of fsd-launcher
//	E2E_TIMINGS=path    append each run's guest-side step timings to path (JSON lines)
//	E2E_TIMEOUT=10m     hard limit for one guest run (default 6m, and always inside go test's -timeout)
//	E2E_KERNEL=path     guest kernel (default: the running kernel's /boot image, else the newest /boot/vmlinuz-* with modules)
//	E2E_MSIZE=524288    9P msize (default 512 KiB)
//	E2E_9P_CACHE=mode   9P cache mode (default none)
package e2e
