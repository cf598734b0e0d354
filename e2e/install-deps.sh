#!/bin/sh
# Install what `make e2e` needs from Debian's packages, only when missing:
#   qemu-system-x86   QEMU (TCG) and /usr/lib/qemu/virtiofsd (qemu-system-common)
#   linux-image-amd64 the guest kernel and its modules (9p, 9pnet_fd,
#                     virtio_console, virtiofs, fuse)
#   busybox-static    the guest's userland (must be static: the guest has no
#                     dynamic loader)
#   cpio              lists the initramfs in the harness's own tests
#   diod              the 9P stand-in (E2E_DAEMON=standin) and the benchmarks'
#                     C peer; optional for `make e2e`
# Needs root (apt-get). Prints what it installs; does nothing when all is
# there.
set -eu

need=""
command -v qemu-system-x86_64 >/dev/null 2>&1 || need="$need qemu-system-x86"
[ -x /usr/lib/qemu/virtiofsd ] || need="$need qemu-system-x86"
ls /boot/vmlinuz-* >/dev/null 2>&1 || need="$need linux-image-amd64"
# The guest needs the static build (package busybox-static); the tests
# check the ELF themselves and say so when it is dynamic.
installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
installed busybox-static || need="$need busybox-static"
command -v cpio >/dev/null 2>&1 || need="$need cpio"
if [ "${E2E_DAEMON:-}" = standin ]; then
	command -v diod >/dev/null 2>&1 || need="$need diod"
fi

# Deduplicate.
need=$(printf '%s\n' $need | sort -u | tr '\n' ' ')
if [ -z "${need% }" ]; then
	echo "e2e: all dependencies present"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "e2e: missing packages:$need (run as root to install them)" >&2
	exit 1
fi
echo "e2e: installing $need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need
