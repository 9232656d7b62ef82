#!/usr/bin/env bash
# Boot test for one appliance image: images/test-boot.sh [core|replicant]
#
# Boots images/out/halyard-ROLE.qcow2 (through an overlay; the image is not modified) under
# QEMU/OVMF/TCG and checks, from the host, through the forwarded 127.0.0.1 ports:
#   1. MQTT is ready within 120 s (QoS 1 publish acknowledged);
#   2. a real client (mosquitto_sub) receives what another (mosquitto_pub) publishes;
#   3. /metrics answers, shows a halyard_sysctl gauge with the profile's value for every
#      tuned key checked below, and the XDP program attached (halyard_xdp_enabled 1);
#   4. core only: the data partition is mounted, the ACPI power button shuts the node down
#      cleanly, it boots again, and a retained message published before the reboot is delivered
#      after it (the data partition holds the store).
# Exits non-zero on the first failure and prints the tail of the serial console.
set -euo pipefail

VALID_ROLES="core replicant"
ROLE="${1:-core}"
ROLE="${ROLE#role=}"
case " $VALID_ROLES " in
    *" $ROLE "*) ;;
    *)
        echo "test-boot.sh: unknown role '$ROLE' (valid roles: ${VALID_ROLES// /, })" >&2
        exit 2
        ;;
esac

IMAGES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$IMAGES")"
# shellcheck source=vm.sh
. "$IMAGES/vm.sh"
"$IMAGES/install-deps.sh"

RUN="$IMAGES/work/test-$ROLE"
rm -rf "$RUN"
PASSED=0
FAILED=0

fail() {
    echo "FAIL [$ROLE]: $*"
    FAILED=$((FAILED + 1))
    if [[ -n "${VM_SERIAL:-}" && -f "$VM_SERIAL" ]]; then
        echo "--- last lines of $VM_SERIAL ---"
        tail -n 40 "$VM_SERIAL" | tr -d '\r' || true
        echo "---"
    fi
    exit 1
}
pass() {
    echo "ok   [$ROLE]: $*"
    PASSED=$((PASSED + 1))
}
finish() {
    vm_stop 30
    echo "$PASSED passed, $FAILED failed"
}

trap finish EXIT

# The profile value of a sysctl key (fields joined by single spaces).
profile_value() {
    awk -v k="$1" '{ line = $0; sub(/^-/, "", line) }
        line ~ "^" k "[ \t]*=" { sub(/^[^=]*=[ \t]*/, "", line); gsub(/[ \t]+/, " ", line); print line; exit }' \
        "$ROOT/kernel-tuning/$ROLE.conf"
}

# Publish one message and receive it with an independent subscriber.
check_pubsub() {
    local topic="halyard/test/$ROLE/$$/$1" msg="hello-$ROLE-$1-$$" got
    timeout 40 mosquitto_sub -h 127.0.0.1 -p "$VM_MQTT_PORT" -i "sub-$$-$1" -q 1 -t "$topic" \
        -C 1 -W 35 >"$RUN/sub-$1.out" 2>"$RUN/sub-$1.err" &
    local sub=$!
    # The subscription is in place once mosquitto_sub has its SUBACK; publish until received.
    local i
    for ((i = 0; i < 15; i++)); do
        sleep 2
        timeout 10 mosquitto_pub -h 127.0.0.1 -p "$VM_MQTT_PORT" -i "pub-$$-$1" -q 1 -t "$topic" \
            -m "$msg" || true
        [[ -s "$RUN/sub-$1.out" ]] && break
    done
    wait "$sub" || true
    got=$(cat "$RUN/sub-$1.out")
    [[ "$got" == "$msg" ]] || fail "publish/subscribe: expected '$msg', got '$got' ($(cat "$RUN/sub-$1.err"))"
    pass "mosquitto_pub -> broker -> mosquitto_sub on $topic"
}

check_metrics() {
    local metrics key want got
    metrics=$(curl -fsS --max-time 10 "http://127.0.0.1:$VM_ADMIN_PORT/metrics") ||
        fail "/metrics did not answer on 127.0.0.1:$VM_ADMIN_PORT"
    printf '%s\n' "$metrics" >"$RUN/metrics.txt"
    pass "/metrics answers ($(wc -l <"$RUN/metrics.txt") lines)"
    for key in net.core.somaxconn fs.nr_open net.core.netdev_max_backlog net.ipv4.tcp_tw_reuse \
        vm.swappiness; do
        want=$(profile_value "$key")
        [[ -n "$want" ]] || fail "profile $ROLE has no $key"
        got=$(awk -v k="halyard_sysctl{key=\"$key\"}" '$1 == k { print $2; exit }' "$RUN/metrics.txt")
        [[ -n "$got" ]] || fail "/metrics has no halyard_sysctl{key=\"$key\"}"
        awk -v a="$got" -v b="$want" 'BEGIN { exit !(a + 0 == b + 0) }' ||
            fail "halyard_sysctl{key=\"$key\"} = $got, profile $ROLE wants $want"
    done
    pass "halyard_sysctl gauges show the $ROLE profile applied"
    if grep -Eq '^halyard_xdp_enabled 1$' "$RUN/metrics.txt"; then
        pass "XDP attached: $(grep '^halyard_xdp_attach_mode' "$RUN/metrics.txt" | head -1)"
    else
        fail "XDP not attached: $(grep -E '^halyard_xdp_(enabled|attach)' "$RUN/metrics.txt" | tr '\n' ' ')"
    fi
}

check_retained_after_reboot() {
    local topic="halyard/test/retained/$$" msg="kept-across-reboot-$$" got
    timeout 10 mosquitto_pub -h 127.0.0.1 -p "$VM_MQTT_PORT" -i "pub-retain-$$" -q 1 -r \
        -t "$topic" -m "$msg" || fail "retained publish failed"
    got=$(timeout 15 mosquitto_sub -h 127.0.0.1 -p "$VM_MQTT_PORT" -i "sub-retain-$$" -t "$topic" \
        -C 1 -W 10 || true)
    [[ "$got" == "$msg" ]] || fail "retained message not delivered before reboot (got '$got')"
    pass "retained message stored"
    vm_stop 60
    grep -Eq 'halyard-init: (\[[0-9.?]*\] )?powering off' "$VM_SERIAL" || fail "no clean shutdown on ACPI power button"
    pass "clean shutdown on the ACPI power button"
    vm_start "$ROLE" "$RUN"
    vm_wait_mqtt "${HALYARD_VM_READY_TIMEOUT:-120}" || fail "MQTT not ready after reboot"
    grep -q 'data partition .* mounted' "$VM_SERIAL" || fail "data partition not mounted after reboot"
    got=$(timeout 15 mosquitto_sub -h 127.0.0.1 -p "$VM_MQTT_PORT" -i "sub-retain2-$$" -t "$topic" \
        -C 1 -W 10 || true)
    [[ "$got" == "$msg" ]] || fail "retained message lost across reboot (got '$got')"
    pass "retained message still delivered after reboot"
}

vm_start "$ROLE" "$RUN"
vm_wait_mqtt "${HALYARD_VM_READY_TIMEOUT:-120}" || fail "MQTT not ready within ${HALYARD_VM_READY_TIMEOUT:-120} s"
pass "boot to MQTT ready in ${VM_READY_SECONDS}s (TCG)"
check_pubsub first
check_metrics
if [[ "$ROLE" == core ]]; then
    grep -q 'data partition .* mounted' "$VM_SERIAL" || fail "data partition not mounted"
    pass "data partition halyard-data mounted"
    check_retained_after_reboot
    check_pubsub after-reboot
fi
