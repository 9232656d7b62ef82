#!/usr/bin/env bash
# Boot an appliance image under QEMU (TCG, OVMF): images/boot.sh [core|replicant] [-- QEMU ARGS]
#
# Forwards 127.0.0.1:$HALYARD_VM_MQTT_PORT (default 11883) to the guest's 1883 and
# 127.0.0.1:$HALYARD_VM_ADMIN_PORT (default 18081) to its 8081, writes the serial console to
# images/work/run-<role>/serial-1.log, waits up to 120 s for MQTT, then keeps the VM running
# until Ctrl-C (or until QEMU exits). The VM is powered off (ACPI, then killed after 30 s) on
# exit. The VM's disk is a qcow2 overlay in images/work/run-<role>/, recreated at every start
# unless HALYARD_VM_KEEP_DISK=1. HALYARD_VM_MEASURE=1 powers the VM off as soon as MQTT is ready
# (a boot-time measurement).
set -euo pipefail

VALID_ROLES="core replicant"
ROLE="${1:-core}"
ROLE="${ROLE#role=}"
case " $VALID_ROLES " in
    *" $ROLE "*) ;;
    *)
        echo "boot.sh: unknown role '$ROLE' (valid roles: ${VALID_ROLES// /, })" >&2
        exit 2
        ;;
esac
shift || true
[[ "${1:-}" == "--" ]] && shift

IMAGES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=vm.sh
. "$IMAGES/vm.sh"
"$IMAGES/install-deps.sh"

RUN="$IMAGES/work/run-$ROLE"
[[ "${HALYARD_VM_KEEP_DISK:-0}" == 1 ]] || rm -rf "$RUN"
export HALYARD_VM_MQTT_PORT=${HALYARD_VM_MQTT_PORT:-11883}
export HALYARD_VM_ADMIN_PORT=${HALYARD_VM_ADMIN_PORT:-18081}

trap 'vm_stop 30' EXIT
trap 'exit 130' INT TERM
vm_start "$ROLE" "$RUN" "$@"
if vm_wait_mqtt "${HALYARD_VM_READY_TIMEOUT:-120}"; then
    echo "MQTT:    mosquitto_sub -h 127.0.0.1 -p $VM_MQTT_PORT -t '#' -v"
    echo "metrics: curl http://127.0.0.1:$VM_ADMIN_PORT/metrics"
    echo "console: tail -f $VM_SERIAL"
    if [[ "${HALYARD_VM_MEASURE:-0}" == 1 ]]; then
        # Boot-time measurement: power off once ready (the ready time is printed above).
        exit 0
    fi
    echo "Ctrl-C powers the VM off."
    wait "$VM_PID" || true
    VM_PID=""
else
    echo "--- last lines of $VM_SERIAL ---"
    tail -n 40 "$VM_SERIAL" || true
    exit 1
fi
