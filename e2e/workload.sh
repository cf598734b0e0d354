#!/bin/sh
# The e2e guest workload, run by the guest's /init (e2e/guest) with busybox
# sh, the same script for every transport (9P through fsd, virtio-fs through
# virtiofsd).
#
# Protocol (see e2e/internal/guestcfg): for each step it prints
#   BEGIN <name>
#   STEP <name> OK|FAIL|SKIP <detail on one line>
# on stdout; /init times the step and forwards the STEP line to the results
# port. "SUM <path> <sha256>" lines (on fd 3, the real stdout) carry data the
# host checks. A step's own output is captured and becomes its detail, so a
# failure says what went wrong.
#
# Environment (set by the host):
#   E2E_TRANSPORT   9p or virtiofs
#   E2E_ROOT        mount point of the root export
#   E2E_RO          mount point of the read-only export ("" when the
#                   transport has none)
#   E2E_SIZES       sizes of the files the guest writes, in bytes
#   E2E_MANY        number of entries the host put in $E2E_ROOT/many
#   E2E_DEEP        depth of the tree mkdir -p makes
#   E2E_CREATE      number of files the guest creates one by one
#   E2E_OUTSIDE     host path of the directory outside the export
#   E2E_VIRTIOFS_TAG  the virtio-fs tag (virtiofs only)
#
# 9P shares are mounted by /init ("/init mount <share>"): it owns the relay
# between the virtio-serial port and the socketpair handed to mount(2) as
# rfdno/wfdno. virtio-fs needs no relay: busybox mount does it.

R=$E2E_ROOT
RO=$E2E_RO
exec 3>&1

# run <name> <function>: one step. The function's exit status decides: 0
# OK, 77 SKIP, anything else FAIL.
run() {
	name=$1
	shift
	echo "BEGIN $name"
	out=$("$@" 2>&1)
	rc=$?
	detail=$(printf '%s' "$out" | tr '\n\t' '  ' | cut -c1-600)
	case $rc in
	0) status=OK ;;
	77) status=SKIP ;;
	*) status=FAIL ;;
	esac
	echo "STEP $name $status $detail"
}

# fail <message>: print the message and fail the step.
fail() {
	echo "$*"
	return 1
}

# sum <file>: sha256 of a file, read with 1 MiB requests.
sum() {
	dd if="$1" bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1
}

# erofs <what> <command...>: the command must fail with "Read-only file
# system".
erofs() {
	what=$1
	shift
	if err=$("$@" 2>&1); then
		fail "$what succeeded on the read-only export"
		return 1
	fi
	case $err in
	*"Read-only file system"*) return 0 ;;
	esac
	fail "$what: want 'Read-only file system', got: $err"
}

# mount_root_export: the root export at $R.
mount_root_export() {
	case $E2E_TRANSPORT in
	virtiofs) mount -t virtiofs "$E2E_VIRTIOFS_TAG" "$R" ;;
	*) /init mount root ;;
	esac
}

mount_root() {
	mkdir -p "$R" || return 1
	mount_root_export || fail "mount root failed" || return 1
	grep " $R " /proc/mounts || fail "$R not in /proc/mounts"
}

# Files the host wrote (1 B to 64 MiB, random) match the host's sums.
host_files() {
	cd "$R/host" || return 1
	n=0
	while read -r want name; do
		got=$(sum "$name")
		echo "SUM host/$name $got" >&3
		[ "$got" = "$want" ] || fail "$name: sha256 $got, host wrote $want" || return 1
		n=$((n + 1))
	done <SHA256SUMS
	[ "$n" -ge 4 ] || fail "only $n files in SHA256SUMS"
	echo "$n host files match"
}

# Random data for the guest's files, made in the guest's RAM (not
# file-system work; /init generates it: /dev/urandom is slow under TCG).
gen_data() {
	mkdir -p /tmp/data || return 1
	for n in $E2E_SIZES; do
		/init random "$n" /tmp/data/g-$n >/tmp/data/g-$n.sha256 || fail "generate $n bytes" || return 1
		# Cross-check the generator's sum with busybox on the small ones.
		if [ "$n" -le 65536 ]; then
			[ "$(sha256sum </tmp/data/g-$n | cut -d' ' -f1)" = "$(cat /tmp/data/g-$n.sha256)" ] ||
				fail "g-$n: generator and sha256sum disagree" || return 1
		fi
	done
	echo "sizes: $E2E_SIZES"
}

# The guest writes its files with 1 MiB writes.
write_files() {
	mkdir -p "$R/guest" || return 1
	for n in $E2E_SIZES; do
		dd if=/tmp/data/g-$n of="$R/guest/g-$n" bs=1M 2>/dev/null || fail "write g-$n" || return 1
	done
	echo "wrote $E2E_SIZES"
}

# ... reads them back and reports their sums for the host.
read_files() {
	for n in $E2E_SIZES; do
		want=$(cat /tmp/data/g-$n.sha256)
		got=$(sum "$R/guest/g-$n")
		[ "$got" = "$want" ] || fail "g-$n read back $got, wrote $want" || return 1
		echo "SUM guest/g-$n $want" >&3
	done
	echo "read back $E2E_SIZES"
}

mkdir_deep() {
	p=$R/deep
	i=1
	while [ $i -le "$E2E_DEEP" ]; do
		p=$p/d$i
		i=$((i + 1))
	done
	mkdir -p "$p" || fail "mkdir -p $p" || return 1
	[ -d "$p" ] || fail "$p is not a directory after mkdir -p"
	echo "depth $E2E_DEEP"
}

# ls of the directory the host filled (busybox ls stats every entry).
ls_many() {
	ls "$R/many" >/tmp/ls.out || fail "ls $R/many failed" || return 1
	n=$(wc -l </tmp/ls.out)
	[ "$n" -eq "$E2E_MANY" ] || fail "ls: $n entries, want $E2E_MANY" || return 1
	first=$(head -n 1 /tmp/ls.out)
	last=$(tail -n 1 /tmp/ls.out)
	[ "$first" = "f00000" ] || fail "first entry $first" || return 1
	want=$(printf 'f%05d' $((E2E_MANY - 1)))
	[ "$last" = "$want" ] || fail "last entry $last, want $want" || return 1
	echo "$n entries"
}

# Many small files created one by one.
create_files() {
	mkdir -p "$R/created" || return 1
	i=0
	while [ $i -lt "$E2E_CREATE" ]; do
		echo "file $i" >"$R/created/c$i" || fail "create c$i" || return 1
		i=$((i + 1))
	done
	n=$(ls "$R/created" | wc -l)
	[ "$n" -eq "$E2E_CREATE" ] || fail "created $n files, want $E2E_CREATE"
	echo "$n files"
}

rename_across() {
	mkdir -p "$R/ren/a/dir" "$R/ren/b/sub" || return 1
	echo rename-me >"$R/ren/a/file" || return 1
	echo inner >"$R/ren/a/dir/inner" || return 1
	mv "$R/ren/a/file" "$R/ren/b/moved" || fail "mv file across directories" || return 1
	mv "$R/ren/a/dir" "$R/ren/b/sub/dir2" || fail "mv directory across directories" || return 1
	[ ! -e "$R/ren/a/file" ] || fail "old name still there" || return 1
	[ "$(cat "$R/ren/b/moved")" = rename-me ] || fail "moved file content" || return 1
	[ "$(cat "$R/ren/b/sub/dir2/inner")" = inner ] || fail "moved directory content" || return 1
	echo "file and directory moved"
}

hardlink() {
	mkdir -p "$R/links" || return 1
	echo linked >"$R/links/file" || return 1
	ln "$R/links/file" "$R/links/hard" || fail "ln" || return 1
	[ "$(stat -c %h "$R/links/file")" = 2 ] || fail "link count $(stat -c %h "$R/links/file")" || return 1
	[ "$(stat -c %i "$R/links/file")" = "$(stat -c %i "$R/links/hard")" ] || fail "inodes differ" || return 1
	echo appended >>"$R/links/hard" || return 1
	[ "$(tail -n 1 "$R/links/file")" = appended ] || fail "write through the link not seen"
}

symlink() {
	ln -s file "$R/links/sym" || fail "ln -s" || return 1
	ln -s ../links "$R/links/dirsym" || return 1
	[ "$(readlink "$R/links/sym")" = file ] || fail "readlink $(readlink "$R/links/sym")" || return 1
	[ "$(head -n 1 "$R/links/sym")" = linked ] || fail "read through symlink" || return 1
	[ -f "$R/links/dirsym/file" ] || fail "walk through directory symlink"
}

chmod_step() {
	mkdir -p "$R/attrs" || return 1
	: >"$R/attrs/mode640" && : >"$R/attrs/suid" || return 1
	chmod 640 "$R/attrs/mode640" || return 1
	chmod 4755 "$R/attrs/suid" || return 1
	[ "$(stat -c %a "$R/attrs/mode640")" = 640 ] || fail "mode $(stat -c %a "$R/attrs/mode640"), want 640" || return 1
	[ "$(stat -c %a "$R/attrs/suid")" = 4755 ] || fail "mode $(stat -c %a "$R/attrs/suid"), want 4755"
}

chown_step() {
	: >"$R/attrs/owned" || return 1
	chown 1234:5678 "$R/attrs/owned" || return 1
	[ "$(stat -c %u:%g "$R/attrs/owned")" = 1234:5678 ] || fail "owner $(stat -c %u:%g "$R/attrs/owned")"
}

touch_date() {
	: >"$R/attrs/dated" || return 1
	TZ=UTC touch -d "2001-02-03 04:05:06" "$R/attrs/dated" || return 1
	[ "$(stat -c %Y "$R/attrs/dated")" = 981173106 ] || fail "mtime $(stat -c %Y "$R/attrs/dated")"
}

truncate_step() {
	head -c 1000 /dev/zero | tr '\0' a >"$R/attrs/trunc" || return 1
	truncate -s 100 "$R/attrs/trunc" || return 1
	[ "$(stat -c %s "$R/attrs/trunc")" = 100 ] || fail "size $(stat -c %s "$R/attrs/trunc") after shrinking" || return 1
	truncate -s 1048576 "$R/attrs/trunc" || return 1
	[ "$(stat -c %s "$R/attrs/trunc")" = 1048576 ] || fail "size $(stat -c %s "$R/attrs/trunc") after growing"
}

# rm -rf of the tree the host made plus what the guest adds to it.
rm_rf() {
	[ -d "$R/rmtree" ] || fail "host tree missing" || return 1
	mkdir -p "$R/rmtree/guest/x/y" && echo z >"$R/rmtree/guest/x/y/z" || return 1
	rm -rf "$R/rmtree" || fail "rm -rf" || return 1
	[ ! -e "$R/rmtree" ] || fail "still there after rm -rf"
}

# The read-only export, mounted by its tag: reads work, every write fails
# with EROFS from the server (the guest mounts it read-write).
ro_export() {
	[ -n "$RO" ] || {
		echo "no read-only export on $E2E_TRANSPORT"
		return 77
	}
	/init mount ro || fail "mount ro" || return 1
	[ "$(cat "$RO/hello")" = "read-only export" ] || fail "read $RO/hello" || return 1
	erofs "create" touch "$RO/new" || return 1
	erofs "mkdir" mkdir "$RO/newdir" || return 1
	erofs "append" sh -c "echo x >>'$RO/hello'" || return 1
	erofs "rm" rm "$RO/hello" || return 1
	erofs "chmod" chmod 600 "$RO/hello" || return 1
	erofs "rename" mv "$RO/hello" "$RO/renamed" || return 1
	erofs "symlink" ln -s hello "$RO/link" || return 1
	umount "$RO" || fail "umount $RO"
	echo "writes refused with EROFS"
}

# Symlinks the host made that point outside the export: the guest sees
# them as symlinks (the server does not follow them) and cannot reach the
# host file through them.
symlink_escape() {
	for l in escape-abs escape-rel escape-deep escape-dir; do
		[ -L "$R/$l" ] || fail "$l is not a symlink in the guest: $(ls -ld "$R/$l")" || return 1
		t=$(readlink "$R/$l") || fail "readlink $l" || return 1
		case $l in
		escape-dir) p=$R/$l/secret ;;
		*) p=$R/$l ;;
		esac
		if out=$(cat "$p" 2>&1); then
			fail "$l -> $t: read through it: $(echo "$out" | head -c 64)" || return 1
		fi
	done
	if ls "$R/escape-dir/" 2>/dev/null | grep -q secret; then
		fail "escape-dir lists the outside directory" || return 1
	fi
	if [ -e "$E2E_OUTSIDE/secret" ]; then
		fail "$E2E_OUTSIDE/secret exists in the guest" || return 1
	fi
	echo "4 links stay inside"
}

# Unmount and mount again: what was written is still there.
remount() {
	sync
	umount "$R" || fail "umount $R" || return 1
	[ ! -e "$R/host/SHA256SUMS" ] || fail "export still visible after umount" || return 1
	mount_root_export || fail "mount again" || return 1
	for n in $E2E_SIZES; do
		[ "$n" -gt 2000000 ] && continue
		want=$(cat /tmp/data/g-$n.sha256)
		got=$(sum "$R/guest/g-$n")
		[ "$got" = "$want" ] || fail "after remount g-$n is $got, want $want" || return 1
	done
	[ -d "$R/deep/d1" ] || fail "deep tree gone after remount"
	echo "remounted"
}

umount_all() {
	sync
	umount "$R" || fail "umount $R"
}

run mount_root mount_root
run host_files host_files
run gen_data gen_data
run write_files write_files
run read_files read_files
run mkdir_deep mkdir_deep
run ls_many ls_many
run create_files create_files
run rename_across rename_across
run hardlink hardlink
run symlink symlink
run chmod chmod_step
run chown chown_step
run touch_date touch_date
run truncate truncate_step
run rm_rf rm_rf
run ro_export ro_export
run symlink_escape symlink_escape
run remount remount
run umount umount_all
