// Package bench is the benchmark harness behind `make bench`: it runs the
// same 9P2000.L workloads through the same client (hugelgupf/p9's, over a
// unix socket) against fsd started by the launcher, diod, p9's own server
// over fsimpl/localfs (a reference), the host doing the same work with plain
// syscalls (the ceiling) and an echo server (the round-trip floor), and
// writes the results as JSON, as a Markdown table in BENCHMARKS.md and as an
// SVG chart of the ratios against their targets.
//
// Servers run pinned to one CPU and the client to the other, and every
// ratio comes from one run. Timing lives here, never in tests.
package bench
