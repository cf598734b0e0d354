#!/usr/bin/env bash
# `make bench`: install diod if missing, build the harness (and the launcher
# when `make` did not), run it. Extra arguments go to the harness, e.g.
#   ./bench/run.sh -quick
#   ./bench/run.sh -baseline bench/out/before.json
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"

if ! command -v diod >/dev/null 2>&1; then
	echo "== installing diod"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq diod >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq diod; }
fi

if [ ! -x bin/fsd-launcher ]; then
	echo "== building bin/fsd-launcher"
	CGO_ENABLED=0 go build -trimpath -o bin/fsd-launcher ./cmd/fsd-launcher ||
		echo "fsd-launcher does not build: the run goes on without fsd"
fi

echo "== building the harness"
CGO_ENABLED=0 go build -trimpath -o bench/out/fsdbench ./bench/cmd/fsdbench

echo "== running (servers on CPU 0, client on CPU 1)"
cmd="make bench"
if [ $# -gt 0 ]; then cmd="./bench/run.sh $*"; fi
# fsd's "before" figures (a run kept from before the performance work), if
# any, are shown next to this run's in BENCHMARKS.md.
baseline=()
case " $* " in
*" -baseline "*) ;;
*) if [ -f bench/out/before.json ]; then baseline=(-baseline bench/out/before.json); fi ;;
esac
exec bench/out/fsdbench -v -command "$cmd" "${baseline[@]}" "$@"
