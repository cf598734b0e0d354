#!/usr/bin/env bash
# Profile fsd's server loop and attach point (bench/cmd/fsdprof: fsd/server
# over fsd/hostfs in one process, under the Go profiler), one workload at a
# time, so that every figure is per operation of that workload:
#   - allocations and bytes per operation, CPU and allocation profiles
#     (bench/out/pprof/WORKLOAD/{cpu,allocs}.pprof, top lists in SUMMARY.md);
#   - system calls per operation (a second, short pass under strace -c).
# Usage: ./bench/profile.sh [WORKLOAD...]   (default: every workload)
# Read a profile: go tool pprof -http=: bench/out/pprof/walk/cpu.pprof
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"

workloads=("$@")
if [ ${#workloads[@]} -eq 0 ]; then
	workloads=(getattr getattr8 walk create readdir read write)
fi
command -v strace >/dev/null 2>&1 || apt-get install -y -qq strace >/dev/null

out=bench/out/pprof
mkdir -p "$out"
CGO_ENABLED=0 go build -o bench/out/fsdbench ./bench/cmd/fsdbench
CGO_ENABLED=0 go build -o bench/out/fsdprof ./bench/cmd/fsdprof

summary="$out/SUMMARY.md"
{
	echo "# fsd profile ($(date -u '+%Y-%m-%d %H:%M UTC'), $(git describe --always --dirty 2>/dev/null || echo dev))"
	echo
	echo "One fsdprof process per workload; figures include its fixed start-up"
	echo "cost (the CPU profiler allocates about 1 MiB once)."
	echo
} >"$summary"

for w in "${workloads[@]}"; do
	echo "== $w"
	dir="$out/$w"
	rm -rf "$dir"
	bench/out/fsdbench -targets fsd-prof -workloads "$w" -fsdprof bench/out/fsdprof \
		-profile-dir "$dir" -out "$dir" -benchmarks "" -docs-svg "" >"$dir.md"
	bench/out/fsdbench -quick -targets fsd-prof -workloads "$w" -strace fsd-prof -fsdprof bench/out/fsdprof \
		-profile-dir "$dir/strace" -out "$dir/strace" -benchmarks "" -docs-svg "" >"$dir.strace.md"
	{
		echo "## $w"
		echo
		sed -n '/^### Throughput/,/^### /p' "$dir.md" | sed '$d'
		sed -n '/^### fsd in-process profile/,$p' "$dir.md"
		sed -n '/^### System calls/,$p' "$dir.strace.md"
		echo '```'
		echo "CPU (top 20, flat):"
		go tool pprof -top -nodecount=20 "$dir/cpu.pprof" 2>/dev/null | sed -n '/flat%/,$p'
		echo
		echo "Allocations (objects, top 15):"
		go tool pprof -top -nodecount=15 -sample_index=alloc_objects "$dir/allocs.pprof" 2>/dev/null | sed -n '/flat%/,$p'
		echo '```'
		echo
	} >>"$summary"
done
echo "written: $summary"
