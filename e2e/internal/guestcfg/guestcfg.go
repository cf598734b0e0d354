// Package guestcfg is the contract between the e2e host harness and the
// guest's init helper (e2e/guest): the JSON document the host writes into the
// initramfs at Path, and the line formats the guest prints on its results
// port. Both sides import it, so the two can never drift apart.
package guestcfg

// Path is where the host puts the configuration inside the initramfs.
const Path = "/etc/e2e.json"

// Transports a share can use.
const (
	Transport9P       = "9p"       // 9P2000.L over a virtio-serial port (trans=fd through a relay)
	TransportVirtioFS = "virtiofs" // virtio-fs (vhost-user-fs-pci)
)

// Result line prefixes, as printed on the results port (one line each):
//
//	STEP <name> <OK|FAIL|SKIP> ns=<elapsed> <detail...>
//	E2E DONE steps=<n> failed=0 ns=<workload> boot_ns=<uptime at start>
//	E2E FAILED steps=<n> failed=<n> ns=<workload> boot_ns=<uptime> <reason...>
//
// The workload script prints "BEGIN <name>" before a step and
// "STEP <name> <status> <detail>" after it; the helper measures the time
// between the two and inserts ns=<elapsed>. Lines starting with "SUM " carry
// data the host verifies (for example the checksum of a file the guest
// wrote) and are forwarded unchanged.
const (
	PrefixBegin = "BEGIN "
	PrefixStep  = "STEP "
	PrefixSum   = "SUM "
	LineDone    = "E2E DONE"
	LineFailed  = "E2E FAILED"
)

// Step statuses.
const (
	StatusOK   = "OK"
	StatusFail = "FAIL"
	StatusSkip = "SKIP"
)

// Config is what the guest helper reads from Path.
type Config struct {
	// Modules are kernel module files inside the initramfs, in load order
	// (dependencies first).
	Modules []string `json:"modules"`
	// Shares are the file systems the workload may mount, by name.
	Shares []Share `json:"shares"`
	// Script is the workload, run with /bin/sh.
	Script string `json:"script"`
	// Env is added to the script's environment.
	Env map[string]string `json:"env"`
	// Results is the device the helper writes result lines to (a serial
	// port of its own, so kernel messages never interleave with them).
	Results string `json:"results"`
	// PortWait bounds the wait for virtio-serial ports to appear, in
	// seconds.
	PortWait int `json:"port_wait"`
}

// Share is one mountable export.
type Share struct {
	// Name is how the workload names the share ("/init mount <name>").
	Name string `json:"name"`
	// Transport is Transport9P or TransportVirtioFS.
	Transport string `json:"transport"`
	// Port is the virtio-serial port name (9P: QEMU's virtserialport
	// name=...), found in /sys/class/virtio-ports/*/name.
	Port string `json:"port,omitempty"`
	// Source is the mount source: the virtio-fs tag, or a label for 9P.
	Source string `json:"source"`
	// Options is the mount data; for 9P the helper appends
	// ",rfdno=N,wfdno=N" itself.
	Options string `json:"options"`
	// Target is the mount point.
	Target string `json:"target"`
}
