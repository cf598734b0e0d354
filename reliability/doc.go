// Package reliability holds the end-to-end tests of fsd-launcher's
// reliability guarantees under faults and hostile load (issue 6). It has
// no code of its own: every guarantee is a test in this package, run by CI
// (`make race`, as root), against the real binary.
//
// TestMain builds cmd/fsd-launcher once (CGO_ENABLED=0, as `make build`).
// The tests drive it only through its CLI (start, stop, run, status) with
// real configuration files; the daemons are real `fsd-launcher serve`
// processes serving real directories over real unix sockets (sandbox
// "none" unless a guarantee is about the sandbox, which none of these
// are). The daemon is measured from outside: descriptors from
// /proc/PID/fd, threads and memory (VmRSS, VmHWM) from /proc/PID/status,
// and goroutines from the stack dump the Go runtime prints on SIGQUIT,
// compared with an idle daemon's (the daemon has no debug endpoint, and
// needs none). Raw 9P frames come from a small client built on fsd/proto.
// Nothing asserts speed; the one time bound asserted (item 2) is itself
// the guarantee, and its test says why the bound is reliable.
//
// The guarantees, numbered as in the issue, and the test proving each:
//
//  1. The daemon is SIGKILLed while serving: `run` reports it and exits
//     non-zero (128+9); `stop --pid --socket` afterwards exits 0 and
//     removes the socket and state file (also after `start`).
//     TestItem01DaemonKilledWhileServing.
//  2. The launcher in `run` mode is SIGKILLed: the daemon gets its
//     parent-death signal and exits within 2 s, leaving no process; after
//     `start` the daemon leads its own session and keeps serving.
//     TestItem02LauncherKilled.
//  3. The recorded PID now belongs to another process (a real PID reuse,
//     staged through ns_last_pid): stop refuses, exits 1, signals nothing
//     and changes nothing. TestItem03PIDReuseRefused.
//  4. Stop twice, stop a PID that never existed, stop with a socket path
//     that is a regular file or a symlink (to a file, to a live socket, to
//     a stale socket): a clear exit code and message, and nothing else
//     touched; a symlink is never followed. TestItem04StopEdgeCases.
//  5. Start while a daemon is live on the socket is refused (exit 1, the
//     live daemon untouched); start after a crash left a stale socket and
//     state file succeeds. TestItem05StartLiveRefusedStaleReplaced.
//  6. A daemon that never prints its ready line fails start at
//     ready_timeout; one that exits with an error before it is ready fails
//     start at once with the daemon's message; either way no process,
//     socket or state file remains. TestItem06StartFailsBeforeReady.
//  7. 50 starts and stops in a row and 20 daemons at once on different
//     sockets: each ready and serving, each stopped; no process, socket,
//     state file or descriptor is left, and no daemon inherits another's
//     descriptors. TestItem07ManyStartsAndStops.
//  8. A client hangs up mid-write (half a frame; replies unread),
//     mid-readdir (reply half read; replies unread), and with 10,000 fids
//     (2,000 open): the daemon's descriptors return to their baseline and
//     its goroutines to an idle daemon's. TestItem08DisconnectsLeakNothing.
//  9. 1,000 connections in a row and 64 at once are all served; the
//     descriptors return to the baseline, the goroutines to an idle
//     daemon's. TestItem09ManyConnections.
//  10. Hostile frames (garbage, a 4 GiB size field, a size below the
//     header, unknown and reply types, a Tread past msize, a walk of 17
//     names, an unknown fid, a fid reused by attach or walk, duplicate
//     tags, a flush of a missing tag, a second Tversion, a frame past
//     msize, a request before Tversion) each get an errno or a closed
//     connection while another connection is served throughout; the
//     FuzzDecode seed corpus and 2,000 mutations of it are survived by a
//     live daemon; `make test` (CI) runs FuzzDecode for FUZZTIME.
//     TestItem10HostileFrames.
//  11. The export fills up (a 1 MiB tmpfs): the client gets ENOSPC, the
//     daemon serves on and freed space is usable. Host-side changes under
//     open fids: a truncated file reads short, an unlinked file still reads
//     and writes through its fid while a fresh walk gets ENOENT, a renamed
//     directory is still walked and listed through its fid, a replaced
//     file's fid still reads the old content. TestItem11HostFaults.
//  12. A client pipelines 10,000 requests (312 MiB) without reading a
//     reply: the daemon stops reading at its in-flight cap (64 per
//     connection), its peak RSS stays within 64 MiB of its baseline, and
//     every request is answered once the client reads.
//     TestItem12PipelinedWithoutReading.
//
// Tests that need root (items 3 and 11) skip with the reason otherwise.
package reliability
