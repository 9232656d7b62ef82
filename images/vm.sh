#!/usr/bin/env bash
# Shared QEMU helpers for boot.sh and test-boot.sh (source this file; it does nothing alone).
#
# One VM at a time per shell: vm_start ROLE RUNDIR, vm_wait_mqtt SECONDS, vm_stop; a test that
# runs several saves one VM's state with vm_save NAME and switches with vm_use NAME. The VM runs under TCG
# (no KVM on this machine kind) with OVMF, its disk is a qcow2 overlay in RUNDIR on top of
# images/out/halyard-ROLE.qcow2 (so the built image is never modified and the overlay keeps
# the data partition across reboots), user-mode networking forwards 127.0.0.1 ports only, and
# the serial console goes to RUNDIR/serial-N.log. Firmware time is kept down: the disk is the
# first boot option (bootindex) and the NICs carry no iPXE option ROM (romfile=), which OVMF
# would otherwise load and start under emulation.

VM_IMAGES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
VM_PID=""
VM_BOOTS=0
# The state of the current VM (vm_save / vm_use).
VM_VARS="VM_PID VM_BOOTS VM_MQTT_PORT VM_ADMIN_PORT VM_SERIAL VM_MONITOR VM_T0 VM_READY_SECONDS"

# vm_save NAME: remembers the current VM's state as NAME; vm_use NAME makes NAME current (a
# name never saved gives a fresh state, for the next vm_start).
vm_save() {
    local v
    for v in $VM_VARS; do eval "VM_SAVED_${1}_$v=\${$v:-}"; done
}
vm_use() {
    local v
    for v in $VM_VARS; do eval "$v=\${VM_SAVED_${1}_$v:-}"; done
    VM_BOOTS=${VM_BOOTS:-0}
}

# A free TCP port on 127.0.0.1 (the kernel picks it; the race until QEMU binds it is harmless
# in practice and QEMU fails loudly if it lost).
vm_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

vm_log() { echo "[vm $(date -u +%H:%M:%S)] $*"; }

# vm_start ROLE RUNDIR [EXTRA_QEMU_ARGS...]: boots (again, if RUNDIR has a disk already).
# Sets VM_PID, VM_MQTT_PORT, VM_ADMIN_PORT, VM_SERIAL, VM_T0.
vm_start() {
    local role=$1 run=$2
    shift 2
    local image="$VM_IMAGES/out/halyard-$role.qcow2"
    [[ -f "$image" ]] || { echo "no image $image: run 'just build-image role=$role'" >&2; return 1; }
    mkdir -p "$run"
    if [[ ! -f "$run/disk.qcow2" ]]; then
        qemu-img create -q -f qcow2 -F qcow2 -b "$image" "$run/disk.qcow2"
        cp "$OVMF_VARS" "$run/OVMF_VARS.fd"
    fi
    VM_MQTT_PORT=${HALYARD_VM_MQTT_PORT:-$(vm_free_port)}
    VM_ADMIN_PORT=${HALYARD_VM_ADMIN_PORT:-$(vm_free_port)}
    VM_BOOTS=$((VM_BOOTS + 1))
    VM_SERIAL="$run/serial-$VM_BOOTS.log"
    VM_MONITOR="$run/monitor.sock"
    rm -f "$VM_MONITOR"
    VM_T0=$(date +%s.%N)
    qemu-system-x86_64 \
        -nodefaults -machine q35 -accel tcg -cpu max -smp 2 -m 1024 \
        -drive if=pflash,format=raw,unit=0,readonly=on,file="$OVMF_CODE" \
        -drive if=pflash,format=raw,unit=1,file="$run/OVMF_VARS.fd" \
        -drive if=none,id=d0,format=qcow2,file="$run/disk.qcow2" \
        -device virtio-blk-pci,drive=d0,bootindex=1 \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$VM_MQTT_PORT-:1883,hostfwd=tcp:127.0.0.1:$VM_ADMIN_PORT-:8081" \
        -device virtio-net-pci,netdev=n0,romfile= \
        -display none -serial "file:$VM_SERIAL" \
        -monitor "unix:$VM_MONITOR,server,nowait" \
        -no-reboot "$@" \
        >"$run/qemu-$VM_BOOTS.log" 2>&1 &
    VM_PID=$!
    vm_log "started QEMU pid $VM_PID ($role, boot $VM_BOOTS): MQTT 127.0.0.1:$VM_MQTT_PORT, admin 127.0.0.1:$VM_ADMIN_PORT, serial $VM_SERIAL"
}

vm_running() { [[ -n "$VM_PID" ]] && kill -0 "$VM_PID" 2>/dev/null; }

# One MQTT round trip: QoS 1 publish acknowledged by the broker (a TCP connect alone proves
# nothing: user-mode networking accepts forwarded connections before the guest does).
vm_mqtt_ok() {
    timeout 2 mosquitto_pub -h 127.0.0.1 -p "$VM_MQTT_PORT" -i "halyard-ready-$$" -q 1 \
        -t halyard/boot/ready -m ready >/dev/null 2>&1
}

# vm_wait_mqtt SECONDS: waits until MQTT answers; prints the boot-to-ready time. Fails when
# the time is up, QEMU exited or the kernel panicked.
vm_wait_mqtt() {
    local limit=$1 deadline now t_fw="" t_kernel="" t_init=""
    deadline=$(($(date +%s) + limit))
    # Seconds since QEMU start.
    since() { awk -v a="$VM_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
    while :; do
        # Phase marks (to within the 0.5 s poll): the firmware started the UKI (OVMF's boot
        # manager logs it), the kernel started /init, /init started the broker.
        [[ -z "$t_fw" ]] && grep -Eq 'BdsDxe: starting|EFI stub' "$VM_SERIAL" 2>/dev/null && t_fw=$(since)
        [[ -z "$t_kernel" ]] && grep -Eq 'halyard-init: (\[[0-9.?]*\] )?role=' "$VM_SERIAL" 2>/dev/null && t_kernel=$(since)
        [[ -z "$t_init" ]] && grep -Eq 'halyard-init: (\[[0-9.?]*\] )?starting broker' "$VM_SERIAL" 2>/dev/null && t_init=$(since)
        if ! vm_running; then
            vm_log "QEMU exited before MQTT was ready"
            return 1
        fi
        if grep -q 'Kernel panic' "$VM_SERIAL" 2>/dev/null; then
            vm_log "kernel panic (see $VM_SERIAL)"
            return 1
        fi
        # No MQTT attempt before the broker starts: until the guest's NIC is up, user-mode
        # networking holds a forwarded connection for seconds instead of refusing it.
        if [[ -n "$t_init" ]] && vm_mqtt_ok; then
            now=$(date +%s.%N)
            VM_READY_SECONDS=$(awk -v a="$VM_T0" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
            vm_log "MQTT ready ${VM_READY_SECONDS}s after QEMU start (UKI started at ~${t_fw:-?}s, /init at ~${t_kernel:-?}s, broker at ~${t_init:-?}s; load average $(cut -d' ' -f1 /proc/loadavg))"
            return 0
        fi
        if (($(date +%s) >= deadline)); then
            vm_log "MQTT not ready after ${limit}s (UKI started at ~${t_fw:-?}s, /init at ~${t_kernel:-?}s, broker at ~${t_init:-?}s; load average $(cut -d' ' -f1 /proc/loadavg); see $VM_SERIAL)"
            return 1
        fi
        sleep 0.5
    done
}

# Sends one command to the QEMU monitor.
vm_monitor() {
    python3 - "$VM_MONITOR" "$1" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
time.sleep(0.2)
s.sendall(sys.argv[2].encode() + b"\n")
time.sleep(0.5)
s.close()
PY
}

# vm_stop [SECONDS [pressed]]: ACPI power button (clean shutdown by /init; not pressed again
# with "pressed"), then kill after SECONDS (default 30). Only the QEMU process this shell
# started is touched.
vm_stop() {
    local limit=${1:-30} i
    vm_running || { VM_PID=""; return 0; }
    [[ "${2:-}" == pressed ]] || vm_monitor system_powerdown 2>/dev/null || true
    for ((i = 0; i < limit * 2; i++)); do
        vm_running || break
        sleep 0.5
    done
    if vm_running; then
        vm_log "no clean shutdown after ${limit}s: killing QEMU pid $VM_PID"
        kill "$VM_PID" 2>/dev/null || true
        sleep 1
        vm_running && kill -9 "$VM_PID" 2>/dev/null
    else
        vm_log "QEMU pid $VM_PID exited"
    fi
    wait "$VM_PID" 2>/dev/null || true
    VM_PID=""
}
