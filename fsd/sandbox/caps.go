package sandbox

import (
	"strings"
	"syscall"
	"unsafe"

	"github.com/moby/sys/capability"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// capSet is a set of capabilities as the kernel's 64-bit mask (the form
// /proc/PID/status shows).
type capSet uint64

func capsOf(caps ...capability.Cap) capSet {
	var s capSet
	for _, c := range caps {
		s |= 1 << uint(c)
	}
	return s
}

func (s capSet) has(c capability.Cap) bool { return s&(1<<uint(c)) != 0 }

// String lists the set by name: "chown,dac_override".
func (s capSet) String() string {
	var names []string
	for c := capability.Cap(0); c < 64; c++ {
		if s.has(c) {
			names = append(names, c.String())
		}
	}
	return strings.Join(names, ",")
}

// fileServerCaps is what fsd keeps: the gVisor gofer's set without
// SYS_CHROOT.
//
//   - CHOWN: Tsetattr uid/gid and Tlcreate/Tmkdir/Tsymlink/Tmknod with the
//     attaching uid (fchownat on files of any owner).
//   - DAC_OVERRIDE: a root guest reads, writes and creates in files and
//     directories whatever their owner and mode.
//   - DAC_READ_SEARCH: linkat(fd, "", dir, name, AT_EMPTY_PATH), the way
//     to hard-link a file known only by its fd (as the gofer does), needs
//     it. For permission checks DAC_OVERRIDE alone would do.
//   - FOWNER: chmod, utimensat with explicit times and xattr changes on
//     files the daemon's uid (root) does not own.
//   - FSETID: keep setuid/setgid bits when root writes or chowns a file,
//     and set setgid on a file whose group is not ours (supplementary groups
//     are dropped, so almost no group is "ours").
//
// SYS_CHROOT is dropped: chroot and pivot_root are done before the drop, and
// the seccomp filter refuses both anyway. Nothing else is needed: no MKNOD
// (fsd refuses to create device nodes), no SETUID/SETGID (fsd keeps uid 0
// and never execs), no SYS_ADMIN.
var fileServerCaps = capsOf(
	capability.CAP_CHOWN,
	capability.CAP_DAC_OVERRIDE,
	capability.CAP_DAC_READ_SEARCH,
	capability.CAP_FOWNER,
	capability.CAP_FSETID,
)

// confineCaps are needed to confine: chroot (SYS_CHROOT), dropping from the
// bounding set (SETPCAP), dropping supplementary groups (SETGID). Namespace
// mode needs SYS_ADMIN as well (mount, pivot_root).
var confineCaps = capsOf(capability.CAP_SYS_CHROOT, capability.CAP_SETPCAP, capability.CAP_SETGID)

const capSysAdmin = capability.CAP_SYS_ADMIN

// Capabilities lists the capabilities a sandboxed fsd keeps in its
// effective, permitted and bounding sets (those of them the process held).
// Its inheritable and ambient sets end empty: fsd never execs.
func Capabilities() []capability.Cap {
	var caps []capability.Cap
	for c := capability.Cap(0); c < 64; c++ {
		if fileServerCaps.has(c) {
			caps = append(caps, c)
		}
	}
	return caps
}

// CapabilityMask is Capabilities as the mask /proc/PID/status shows in
// CapEff, CapPrm and CapBnd.
func CapabilityMask() uint64 { return uint64(fileServerCaps) }

// heldCaps is the calling thread's capability state.
type heldCaps struct {
	effective, permitted capSet
}

func currentCapabilities() (heldCaps, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return heldCaps{}, errors.WithStack(err)
	}
	return heldCaps{
		effective: capSet(data[0].Effective) | capSet(data[1].Effective)<<32,
		permitted: capSet(data[0].Permitted) | capSet(data[1].Permitted)<<32,
	}, nil
}

// limitCapabilities leaves keep in the bounding, effective and permitted
// sets of every thread and empties the inheritable and ambient sets. Order
// matters: the bounding set first (PR_CAPBSET_DROP needs SETPCAP, which
// capset then drops).
func limitCapabilities(keep capSet) error {
	last, err := capability.LastCap()
	if err != nil {
		return &StepError{Step: "find last capability", Err: errors.WithStack(err)}
	}
	for c := capability.Cap(0); c <= last; c++ {
		if keep.has(c) {
			continue
		}
		if err := allThreadsPrctl(unix.PR_CAPBSET_DROP, uintptr(c)); err != nil {
			return &StepError{Step: "drop from bounding set " + c.String(), Err: err}
		}
	}
	if err := allThreadsPrctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL); err != nil {
		return &StepError{Step: "clear ambient capabilities", Err: err}
	}
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := &[2]unix.CapUserData{
		{Effective: uint32(keep), Permitted: uint32(keep)},
		{Effective: uint32(keep >> 32), Permitted: uint32(keep >> 32)},
	}
	// capset(2) with pid 0 changes the calling thread only: run it on all.
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return &StepError{Step: "capset " + keep.String(), Err: errors.WithStack(e)}
	}
	return nil
}

// allThreadsPrctl runs prctl(option, arg2, 0, 0, 0) on every thread of the
// process (prctl's credential options act on the calling thread only).
func allThreadsPrctl(option int, arg2 uintptr) error {
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, uintptr(option), arg2, 0, 0, 0, 0); e != 0 {
		return errors.WithStack(e)
	}
	return nil
}

// allThreadsSupported reports whether syscall.AllThreadsSyscall works here:
// the Go runtime refuses it (ENOTSUP, before doing anything) in binaries
// linked with cgo. getpid is harmless to run on every thread.
func allThreadsSupported() bool {
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_GETPID, 0, 0, 0)
	return e != unix.ENOTSUP
}
