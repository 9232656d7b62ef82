#!/usr/bin/env bash
# Two-VM test: a core image and a replicant image booted together, forming a cluster.
#   images/test-cluster.sh
#
# Boots images/out/halyard-core.qcow2 and halyard-replicant.qcow2 (through overlays; the images
# are not modified) side by side under QEMU/OVMF/TCG. Each VM has two NICs:
#   eth0: user-mode networking, static 10.0.2.15/24, MQTT and admin forwarded from 127.0.0.1
#         ports (how this test talks to each broker);
#   eth1: the cluster network, a QEMU datagram socket between the two VMs on 127.0.0.1 only
#         (each VM sends its frames to the other's UDP port): core 10.77.0.1/24, replicant
#         10.77.0.2/24, the primary interface (XDP, cluster address).
# Both nodes are configured from the kernel command line only (halyard.name, halyard.seeds,
# halyard.iface, halyard.ip, halyard.ip.eth0, halyard.cluster.initial_cores): the UKI is taken
# out of each image's EFI system partition and booted with QEMU's -kernel/-append, which OVMF
# hands to the UKI as its load options (systemd-stub uses them instead of the built-in command
# line when Secure Boot is off, as a boot entry's options would be on a real machine).
# The core forms the cluster alone (initial_cores = its own name); the replicant streams from it.
#
# Checked, from the host:
#   1. both brokers answer MQTT within 120 s;
#   2. the cluster forms: both nodes see two members, the core has a Raft leader, the
#      replicant streams in state normal (/status);
#   3. a message published on the core reaches a subscriber on the replicant, and one published
#      on the replicant reaches a subscriber on the core (real clients: mosquitto_pub/_sub).
# Exits non-zero on the first failure and prints the tail of both serial consoles.
set -euo pipefail

IMAGES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=vm.sh
. "$IMAGES/vm.sh"
"$IMAGES/install-deps.sh"

RUN="$IMAGES/work/test-cluster"
rm -rf "$RUN"
mkdir -p "$RUN"
PASSED=0
FAILED=0
# The cluster network (eth1) and its cluster port (the baked config's cluster.listen).
CORE_IP=10.77.0.1
REPLICANT_IP=10.77.0.2
CLUSTER_PORT=29901
# Bound on the cluster forming once both brokers answer.
FORM_SECONDS=60

tail_serials() {
    local name
    for name in core replicant; do
        vm_use "$name"
        if [[ -n "${VM_SERIAL:-}" && -f "$VM_SERIAL" ]]; then
            echo "--- last lines of $VM_SERIAL ---"
            tail -n 30 "$VM_SERIAL" | tr -d '\r' || true
        fi
    done
    echo "---"
}
fail() {
    echo "FAIL [cluster]: $*"
    FAILED=$((FAILED + 1))
    tail_serials
    exit 1
}
pass() {
    echo "ok   [cluster]: $*"
    PASSED=$((PASSED + 1))
}
finish() {
    # Both VMs get the power button at once, then each is waited for (and killed if need be).
    local name
    for name in core replicant; do
        vm_use "$name"
        vm_running && { vm_monitor system_powerdown 2>/dev/null || true; }
    done
    for name in core replicant; do
        vm_use "$name"
        vm_stop 30 pressed
    done
    echo "$PASSED passed, $FAILED failed"
}
trap finish EXIT

# A free UDP port on 127.0.0.1 (for the datagram socket network).
free_udp_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The UKI from an image's EFI system partition (partition 1 starts at 1 MiB).
extract_uki() {
    local role=$1 raw="$IMAGES/out/halyard-$1.raw"
    [[ -f "$raw" ]] || fail "no image $raw: run 'just build-image role=$role'"
    mcopy -n -i "$raw@@1M" ::/EFI/BOOT/BOOTX64.EFI "$RUN/$role.efi" || fail "no UKI in $raw"
    # The image's own command line, which -append replaces: keep it and add to it.
    objcopy -O binary --only-section=.cmdline "$RUN/$role.efi" "$RUN/$role.cmdline"
    [[ -s "$RUN/$role.cmdline" ]] || fail "no .cmdline section in the UKI of $raw"
}

# boot ROLE NODE_NAME IP MAC LOCAL_UDP REMOTE_UDP EXTRA_CMDLINE...: the VM's state is saved as ROLE.
boot() {
    local role=$1 name=$2 ip=$3 mac=$4 local_port=$5 remote_port=$6
    shift 6
    local cmdline
    cmdline="$(cat "$RUN/$role.cmdline") halyard.name=$name halyard.iface=eth1 halyard.ip=$ip/24"
    cmdline+=" halyard.ip.eth0=10.0.2.15/24 halyard.seeds=$CORE_IP:$CLUSTER_PORT $*"
    vm_use "$role"
    vm_start "$role" "$RUN/$role" \
        -kernel "$RUN/$role.efi" -append "$cmdline" \
        -netdev "dgram,id=c0,local.type=inet,local.host=127.0.0.1,local.port=$local_port,remote.type=inet,remote.host=127.0.0.1,remote.port=$remote_port" \
        -device "virtio-net-pci,netdev=c0,mac=$mac,romfile="
    vm_log "$role ($name): $cmdline"
    vm_save "$role"
}

# The cluster section of a node's /status (compact JSON) or nothing.
cluster_status() {
    vm_use "$1"
    curl -fsS --max-time 5 "http://127.0.0.1:$VM_ADMIN_PORT/status" 2>/dev/null |
        python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin).get("cluster"), sort_keys=True))' 2>/dev/null
}

# Publishes on node FROM until an independent subscriber on node TO receives the message.
check_across() {
    local from=$1 to=$2 topic="halyard/test/cluster/$$/$1-to-$2" msg="from-$1-to-$2-$$" got
    local from_port to_port i sub
    vm_use "$from"; from_port=$VM_MQTT_PORT
    vm_use "$to"; to_port=$VM_MQTT_PORT
    timeout 70 mosquitto_sub -h 127.0.0.1 -p "$to_port" -i "sub-$$-$to" -q 1 -t "$topic" \
        -C 1 -W 65 >"$RUN/sub-$to.out" 2>"$RUN/sub-$to.err" &
    sub=$!
    # The route reaches the publisher's node once the subscription is committed and applied
    # there; publish until the subscriber has the message.
    for ((i = 0; i < 30; i++)); do
        sleep 2
        timeout 10 mosquitto_pub -h 127.0.0.1 -p "$from_port" -i "pub-$$-$from" -q 1 -t "$topic" \
            -m "$msg" || true
        [[ -s "$RUN/sub-$to.out" ]] && break
    done
    wait "$sub" || true
    got=$(cat "$RUN/sub-$to.out")
    [[ "$got" == "$msg" ]] ||
        fail "published on $from, subscribed on $to: expected '$msg', got '$got' ($(cat "$RUN/sub-$to.err"))"
    pass "mosquitto_pub on $from -> cluster -> mosquitto_sub on $to ($topic)"
}

extract_uki core
extract_uki replicant
core_udp=$(free_udp_port)
replicant_udp=$(free_udp_port)
[[ "$core_udp" != "$replicant_udp" ]] || replicant_udp=$(free_udp_port)
boot core core1 "$CORE_IP" 52:54:00:77:00:01 "$core_udp" "$replicant_udp" \
    halyard.cluster.initial_cores=core1
boot replicant replicant1 "$REPLICANT_IP" 52:54:00:77:00:02 "$replicant_udp" "$core_udp"

for role in core replicant; do
    vm_use "$role"
    vm_wait_mqtt "${HALYARD_VM_READY_TIMEOUT:-120}" || fail "$role: MQTT not ready"
    vm_save "$role"
    pass "$role: boot to MQTT ready in ${VM_READY_SECONDS}s (TCG, two VMs at once)"
done

formed=""
deadline=$(($(date +%s) + FORM_SECONDS))
while (($(date +%s) < deadline)); do
    core_st=$(cluster_status core)
    rep_st=$(cluster_status replicant)
    if python3 - "$core_st" "$rep_st" <<'PY'
import json, sys
try:
    core, rep = json.loads(sys.argv[1]), json.loads(sys.argv[2])
except ValueError:
    sys.exit(1)
ok = (core and rep
      and core.get("members") == 2 and rep.get("members") == 2
      and core.get("raft_leader") is not None
      and rep.get("stream_state") == "normal"
      and (rep.get("applied_index") or 0) > 0)
sys.exit(0 if ok else 1)
PY
    then
        formed=1
        break
    fi
    sleep 2
done
[[ -n "$formed" ]] || fail "cluster did not form within ${FORM_SECONDS}s: core $core_st, replicant $rep_st"
pass "cluster formed: core1 leader, replicant1 streaming (members 2)"

check_across core replicant
check_across replicant core
