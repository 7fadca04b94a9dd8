#!/bin/sh
# Runs inside the Linux host (tests/host/init runs /host/guest.sh) for
# tests/tests/linux_host.rs, which writes /host/params:
#   TARGET      the target's name
#   PORTS       every member's iSCSI port on the host's loopback, the
#               Primary's first
#   FIO_SIZE    bytes of the device fio writes, FIO_RATE_IOPS its pace
#
# Logs in to every member through both NICs (eth0 -> 10.0.2.2, eth1 ->
# 10.0.3.2, one iscsiadm iface bound to each: two paths per member; the
# Primary first), waits for multipathd to build the map from every path,
# records multipath -ll
# and each path's member and ALUA state, then writes with fio and verifies
# (crc32c) through the multipath device while the test kills the Primary,
# logging every completion's time. It records what the test needs in
# /host; any step that does not happen ends the script with a non-zero
# status and a line "guest: FAIL: why".
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

# What each path (sdX) is: its member's port, the NIC, the ALUA state the
# kernel holds for it (scsi_dh_alua).
paths() {
    local d sys sess conn
    for d in /sys/block/sd*; do
        [ -e "$d" ] || continue
        sys="$(readlink -f "$d/device")"
        sess="$(echo "$sys" | grep -o 'session[0-9]*' | head -1)"
        conn="$(ls -d /sys/class/iscsi_connection/"connection${sess#session}":* | head -1)"
        echo "$(basename "$d") $(cat "$conn/persistent_address"):$(cat "$conn/persistent_port")" \
            "$(cat "$d/device/access_state" 2>/dev/null)" "dh=$(cat "$d/device/dh_state")" \
            "recovery_tmo=$(cat /sys/class/iscsi_session/"$sess"/recovery_tmo)"
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
# The Primary first, so that the map has an Active/Optimized group from the
# start: when the first two paths of a WWID are Standby ones, multipathd
# creates the map with no path that takes I/O, udev's blkid on the new
# device queues (queue_if_no_path), and multipathd waits uev_wait_timeout
# (30 s) for the creation uevent before it adds the other paths.
say "logging in to the Primary's portals (port $1) through both NICs"
login "$1" 0 10.0.2.2
login "$1" 1 10.0.3.2

# Waits (60 s at most) until multipath -ll shows $1 paths "active ready",
# tracing each change of its output in /host/multipath-trace.txt.
wait_map() {
    local deadline ll last ready
    deadline=$(($(cut -d. -f1 /proc/uptime) + 60))
    last=""
    while :; do
        wwid="$(multipathd show maps raw format '%w' 2>/dev/null | head -1)"
        ll="$(multipath -ll 2>/dev/null)"
        if [ "$ll" != "$last" ]; then
            printf '%s\n%s\n' "--- $(cut -d' ' -f1 /proc/uptime)" "$ll" >>/host/multipath-trace.txt
            last="$ll"
        fi
        ready=0
        [ -n "$wwid" ] && ready="$(multipath -ll "$wwid" 2>/dev/null | grep -c 'active ready running')"
        [ "$ready" = "$1" ] && return 0
        [ "$(cut -d. -f1 /proc/uptime)" -lt "$deadline" ] \
            || fail "no map of $1 ready paths in 60 s: $(multipath -ll 2>&1)"
        sleep 0.1
    done
}
say "waiting for the map of the Primary's 2 paths"
wait_map 2
say "logging in to the other members"
shift
for p in "$@"; do
    login "$p" 0 10.0.2.2
    login "$p" 1 10.0.3.2
done
sessions="$(iscsiadm -m session | grep -c "$TARGET")"
[ "$sessions" = 6 ] || fail "$sessions sessions, not 6: $(iscsiadm -m session)"
say "waiting for the map of 6 paths"
wait_map 6
dev="/dev/mapper/$wwid"
say "map $wwid ready"
multipath -ll "$wwid" >/host/multipath-before.txt 2>&1
paths >/host/paths-before.txt
first="$(awk '{print $1; exit}' /host/paths-before.txt)"
sg_inq "/dev/$first" >/host/sg-inq.txt 2>&1
sg_rtpg --decode "/dev/$first" >/host/sg-rtpg-before.txt 2>&1

# The clocks that place the kernel's messages (uptime) among fio's
# completions (Unix time).
echo "$(date +%s.%N) $(cut -d' ' -f1 /proc/uptime)" >/host/clock.txt
say "fio: randwrite $FIO_SIZE at $FIO_RATE_IOPS IOPS, then verify"
touch "$S/fio-started"
fio --name=host --filename="$dev" --direct=1 --ioengine=libaio --iodepth=8 \
    --rw=randwrite --bs=4k --size="$FIO_SIZE" --rate_iops="$FIO_RATE_IOPS" \
    --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --write_lat_log=/tmp/lat --log_avg_msec=0 --log_unix_epoch=1 \
    --output=/host/fio.txt
echo $? >/host/fio-exit
touch "$S/fio-done"
say "fio exited $(cat /host/fio-exit)"
cp /tmp/lat_clat.*.log /host/ 2>/dev/null

multipath -ll "$wwid" >/host/multipath-after.txt 2>&1
paths >/host/paths-after.txt
ao="$(awk '/active.optimized/ {print $1; exit}' /host/paths-after.txt)"
sg_rtpg --decode "/dev/${ao:-sda}" >/host/sg-rtpg-after.txt 2>&1
dmesg >/host/dmesg.txt
say "done"
