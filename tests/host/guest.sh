#!/bin/sh
# Runs inside the Linux host (tests/host/init runs /host/guest.sh) for
# tests/tests/linux_host.rs, which writes /host/params:
#   TARGET      the target's name; LUN 0 an active-passive device, LUN 1
#               an active-active one
#   PORTS       every member's iSCSI port on the host's loopback, the
#               Primary first
#   FIO_SIZE    bytes of each device fio writes, FIO_RATE_IOPS its pace
#   FIO_AA_EXTRA  more fio options for the AA map's job (experiments;
#               empty in the test)
#
# Logs in to every member through both NICs (eth0 -> 10.0.2.2, eth1 ->
# 10.0.3.2, one iscsiadm iface bound to each: two paths per member and
# LUN; the Primary first), waits for multipathd to build both maps (the
# AP one of LUN 0, the AA one of LUN 1) from every path, records
# multipath -ll of each and each path's member, LUN and ALUA state, then
# writes with fio and verifies (crc32c) through both multipath devices at
# once, one fio per map, while the test kills the Primary, logging every
# completion's time. It records what the test needs in /host (the AP
# map's files as multipath-before.txt, fio-ap.txt...; the AA map's as
# multipath-aa-before.txt, fio-aa.txt...); any step that does not happen
# ends the script with a non-zero status and a line "guest: FAIL: why".
# The image's sh is dash, which has local.
# shellcheck disable=SC3043
set -u
# shellcheck source=/dev/null
. /host/params
S=/host/state

say() { echo "guest: $(cut -d' ' -f1 /proc/uptime) $*"; }
fail() {
    say "FAIL: $*"
    dmesg >/host/dmesg.txt
    exit 1
}

# What each path (sdX) is: its member's port, the ALUA state the kernel
# holds for it (scsi_dh_alua), its H:C:T:L.
paths() {
    local d sys sess conn
    for d in /sys/block/sd*; do
        [ -e "$d" ] || continue
        sys="$(readlink -f "$d/device")"
        sess="$(echo "$sys" | grep -o 'session[0-9]*' | head -1)"
        for conn in /sys/class/iscsi_connection/"connection${sess#session}":*; do break; done
        echo "$(basename "$d") $(cat "$conn/persistent_address"):$(cat "$conn/persistent_port")" \
            "$(cat "$d/device/access_state" 2>/dev/null)" "dh=$(cat "$d/device/dh_state")" \
            "recovery_tmo=$(cat /sys/class/iscsi_session/"$sess"/recovery_tmo)" \
            "hctl=$(basename "$sys")"
    done
}

say "setting up ifaces and nodes for $TARGET on ports $PORTS"
for n in 0 1; do
    iscsiadm -m iface -I "nic$n" -o new >/dev/null || fail "iface nic$n"
    iscsiadm -m iface -I "nic$n" -o update -n iface.net_ifacename -v "eth$n" >/dev/null \
        || fail "iface nic$n on eth$n"
done
for p in $PORTS; do
    iscsiadm -m node -o new -T "$TARGET" -p "10.0.2.2:$p" -I nic0 >/dev/null || fail "node 10.0.2.2:$p"
    iscsiadm -m node -o new -T "$TARGET" -p "10.0.3.2:$p" -I nic1 >/dev/null || fail "node 10.0.3.2:$p"
done
# shellcheck disable=SC2086 # one word per port
set -- $PORTS
iscsiadm -m node -T "$TARGET" -p "10.0.2.2:$1" -I nic0 \
    | grep -E 'noop_out|replacement_timeout' >/host/node-settings.txt

login() { # port NIC-number address
    iscsiadm -m node -T "$TARGET" -p "$3:$1" -I "nic$2" --login >>/host/login.txt 2>&1 \
        || fail "login to $3:$1 through nic$2: $(cat /host/login.txt)"
}
# The Primary first, so that the AP map has an Active/Optimized group from
# the start: when the first two paths of a WWID are Standby ones,
# multipathd creates the map with no path that takes I/O, udev's blkid on
# the new device queues (queue_if_no_path), and multipathd waits
# uev_wait_timeout (30 s) for the creation uevent before it adds the other
# paths. (Every member is Active/Optimized for the AA device.)
say "logging in to the Primary's portals (port $1) through both NICs"
login "$1" 0 10.0.2.2
login "$1" 1 10.0.3.2

# The WWID of the map whose paths lead to LUN $1 (empty while none).
wwid_of_lun() {
    multipathd show paths raw format '%i %w %m' 2>/dev/null \
        | awk -v l="$1" '{n = split($1, a, ":")} n == 4 && a[4] == l && $3 != "" {print $2; exit}'
}

# How many paths of map $2 show "active ready running" in the topology $1.
ready_in() {
    map_in "$1" "$2" | grep -c 'active ready running'
}

# The lines of map $2 in the topology $1 (multipath -ll's format;
# multipathd's own may put the last action before a map's name, as in
# "create: 3600...").
map_in() {
    echo "$1" | awk -v w="$2" '
        /^[^|` ]/ && !/^size=/ { h = $0; sub(/^[a-z]+: /, "", h); split(h, f, " "); in_map = (f[1] == w) }
        in_map'
}

# Waits (60 s at most) until the maps of LUN 0 and LUN 1 both show $1
# paths "active ready running": in multipathd's view (cheap), then, when
# $2 is "check", in multipath -ll too, which checks every path again
# (slow: 4 s for 12 paths here). Traces each change of multipathd's
# topology in /host/multipath-trace.txt; sets AP and AA to the maps'
# WWIDs and LL to the multipath -ll that showed them ready.
AP=""
AA=""
LL=""
wait_maps() {
    local deadline top last
    deadline=$(($(cut -d. -f1 /proc/uptime) + 60))
    last=""
    while :; do
        top="$(multipathd show topology 2>/dev/null)"
        if [ "$top" != "$last" ]; then
            printf '%s\n%s\n' "--- $(cut -d' ' -f1 /proc/uptime)" "$top" >>/host/multipath-trace.txt
            last="$top"
        fi
        AP="$(wwid_of_lun 0)"
        AA="$(wwid_of_lun 1)"
        if [ -n "$AP" ] && [ -n "$AA" ] && [ "$(ready_in "$top" "$AP")" = "$1" ] \
            && [ "$(ready_in "$top" "$AA")" = "$1" ]; then
            [ "$2" = check ] || return 0
            LL="$(multipath -ll 2>/dev/null)"
            printf '%s\n%s\n' "--- $(cut -d' ' -f1 /proc/uptime) multipath -ll" "$LL" >>/host/multipath-trace.txt
            [ "$(ready_in "$LL" "$AP")" = "$1" ] && [ "$(ready_in "$LL" "$AA")" = "$1" ] && return 0
        fi
        [ "$(cut -d. -f1 /proc/uptime)" -lt "$deadline" ] \
            || fail "no maps of LUN 0 and 1 with $1 ready paths each in 60 s: $(multipath -ll 2>&1)"
        sleep 0.1
    done
}
say "waiting for the maps of the Primary's 2 paths"
wait_maps 2 no-check
say "logging in to the other members"
shift
for p in "$@"; do
    login "$p" 0 10.0.2.2
    login "$p" 1 10.0.3.2
done
sessions="$(iscsiadm -m session | grep -c "$TARGET")"
[ "$sessions" = 6 ] || fail "$sessions sessions, not 6: $(iscsiadm -m session)"
say "waiting for the maps of 6 paths"
wait_maps 6 check
ap="$AP"
aa="$AA"
[ "$ap" != "$aa" ] || fail "LUN 0 and LUN 1 in one map $ap"
say "AP map $ap (LUN 0), AA map $aa (LUN 1) ready"
map_in "$LL" "$ap" >/host/multipath-before.txt
map_in "$LL" "$aa" >/host/multipath-aa-before.txt
paths >/host/paths-before.txt
for lun in 0 1; do
    first="$(awk -v l=":$lun\$" '$NF ~ l {print $1; exit}' /host/paths-before.txt)"
    [ -n "$first" ] || fail "no path of LUN $lun: $(cat /host/paths-before.txt)"
    sg_inq "/dev/$first" >"/host/sg-inq-lun$lun.txt" 2>&1
    sg_rtpg --decode "/dev/$first" >"/host/sg-rtpg-before-lun$lun.txt" 2>&1
done

# Persistent reservations of the AA device (LUN 1) through paths to two
# members: registered and reserved (Write Exclusive) through m1's path, read
# through m2's, where a write (another I_T nexus: another target port) is
# refused; the holder's write goes. Cleared before fio.
# shellcheck disable=SC2086 # one word per port
set -- $PORTS
path_to() { # port LUN -> the first sdX of that member's port and LUN
    awk -v p=":$1" -v l=":$2\$" 'substr($2, length($2) - length(p) + 1) == p && $NF ~ l {print $1; exit}' \
        /host/paths-before.txt
}
pr_m1="$(path_to "$1" 1)"
pr_m2="$(path_to "$2" 1)"
[ -n "$pr_m1" ] && [ -n "$pr_m2" ] || fail "no LUN 1 paths to m1 and m2: $(cat /host/paths-before.txt)"
echo "$pr_m1 $pr_m2" >/host/pr-paths.txt
sg_persist --out --register --param-sark=0x7e57 "/dev/$pr_m1" >/host/pr-out.txt 2>&1 \
    || fail "register through m1: $(cat /host/pr-out.txt)"
sg_persist --out --reserve --param-rk=0x7e57 --prout-type=1 "/dev/$pr_m1" >>/host/pr-out.txt 2>&1 \
    || fail "reserve through m1: $(cat /host/pr-out.txt)"
sg_persist --in --read-keys "/dev/$pr_m2" >/host/pr-keys-m2.txt 2>&1
sg_persist --in --read-reservation "/dev/$pr_m2" >/host/pr-reservation-m2.txt 2>&1
sg_raw -s 512 -i /dev/zero "/dev/$pr_m2" 2a 00 00 00 00 40 00 00 01 00 >/host/pr-write-m2.txt 2>&1
sg_raw -s 512 -i /dev/zero "/dev/$pr_m1" 2a 00 00 00 00 40 00 00 01 00 >/host/pr-write-m1.txt 2>&1
sg_persist --out --clear --param-rk=0x7e57 "/dev/$pr_m1" >>/host/pr-out.txt 2>&1 \
    || fail "clear through m1: $(cat /host/pr-out.txt)"
sg_persist --in --read-keys "/dev/$pr_m2" >/host/pr-keys-after.txt 2>&1
say "persistent reservations through $pr_m1 (m1) and $pr_m2 (m2) checked"

# The clocks that place the kernel's messages (uptime) among fio's
# completions (Unix time).
echo "$(date +%s.%N) $(cut -d' ' -f1 /proc/uptime)" >/host/clock.txt
# One fio on each map, at once; each records its exit status and a
# marker when it ends.
fio_on() { # name WWID [more fio options]
    local name="$1" wwid="$2"
    shift 2
    fio --name="$name" --filename="/dev/mapper/$wwid" --direct=1 --ioengine=libaio --iodepth=8 \
        --rw=randwrite --bs=4k --size="$FIO_SIZE" --rate_iops="$FIO_RATE_IOPS" \
        --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --write_lat_log="/tmp/$name" --log_avg_msec=0 --log_unix_epoch=1 \
        --output="/host/fio-$name.txt" "$@"
    echo $? >"/host/fio-$name-exit"
    touch "$S/fio-$name-done"
    say "fio on the $name map exited $(cat "/host/fio-$name-exit")"
}
say "fio on both maps: randwrite $FIO_SIZE at $FIO_RATE_IOPS IOPS each, then verify"
fio_on ap "$ap" &
fio_ap=$!
# shellcheck disable=SC2086 # one word per option
fio_on aa "$aa" ${FIO_AA_EXTRA:-} &
fio_aa=$!
touch "$S/fio-started"
wait "$fio_ap"
wait "$fio_aa"
touch "$S/fio-done"
for j in ap aa; do
    cat "/tmp/${j}_clat".*.log >"/host/lat-$j.log" || fail "no completion log of the $j fio"
done

LL="$(multipath -ll 2>/dev/null)"
map_in "$LL" "$ap" >/host/multipath-after.txt
map_in "$LL" "$aa" >/host/multipath-aa-after.txt
paths >/host/paths-after.txt
for lun in 0 1; do
    ao="$(awk -v l=":$lun\$" '$NF ~ l && /active.optimized/ {print $1; exit}' /host/paths-after.txt)"
    sg_rtpg --decode "/dev/${ao:-sda}" >"/host/sg-rtpg-after-lun$lun.txt" 2>&1
done
dmesg >/host/dmesg.txt
say "done"
