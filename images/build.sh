#!/usr/bin/env bash
# Build the Halyard appliance image for one role: images/build.sh [core|replicant]
#
# Output (images/out/): halyard-<role>.raw (UEFI-bootable GPT disk), halyard-<role>.qcow2,
# halyard-<role>.manifest.json. Byte-for-byte reproducible: every timestamp comes from
# SOURCE_DATE_EPOCH (the last commit's time unless set), every UUID from the role and versions.
# Needs no loop devices, mounts or containers. Downloads are cached in images/work/.
set -euo pipefail

VALID_ROLES="core replicant"
ROLE="${1:-core}"
ROLE="${ROLE#role=}"
case " $VALID_ROLES " in
    *" $ROLE "*) ;;
    *)
        echo "build.sh: unknown role '$ROLE' (valid roles: ${VALID_ROLES// /, })" >&2
        exit 2
        ;;
esac

IMAGES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$IMAGES")"
# shellcheck source=kernel.version
. "$IMAGES/kernel.version"
WORK="$IMAGES/work"
OUT="$IMAGES/out"
STAGE="$WORK/stage-$ROLE"
TARGET_TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub

# Modules the initramfs carries (dependencies are added from modules.dep): virtio, storage,
# common server NICs, ext4 and what the power button needs.
MODULES="virtio_pci virtio_net virtio_blk virtio_scsi sd_mod nvme ahci
    e1000 e1000e igb igc ixgbe i40e ice mlx5_core bnxt_en r8169
    ext4 crc32c_generic crc32c_intel button evdev"
# Loaded explicitly by /init (not found by modalias); ext4 only where there is a data partition.
MODULES_ALWAYS="button evdev"
if [[ "$ROLE" == core ]]; then
    MODULES_ALWAYS="ext4 crc32c_generic $MODULES_ALWAYS"
fi

# Disk layout (MiB). The ESP holds the UKI; core gets an ext4 data partition.
ESP_MIB=40
DATA_MIB=16

export LC_ALL=C TZ=UTC
umask 022

T0=$(date +%s.%N)
STEP=0
STEPS=10
step_start=0
step() {
    STEP=$((STEP + 1))
    step_start=$(date +%s.%N)
    printf '[%2d/%d] %s ...\n' "$STEP" "$STEPS" "$*"
}
step_done() {
    local now
    now=$(date +%s.%N)
    awk -v a="$step_start" -v b="$now" -v n="${1:-}" \
        'BEGIN { printf "       done in %.1fs%s\n", b - a, (n == "" ? "" : " (" n ")") }'
}
die() {
    echo "build.sh: $*" >&2
    exit 1
}

# A deterministic UUID (version-4 layout) from a purpose string and the build identity.
uuid_for() {
    local h
    h=$(printf 'halyard:%s:%s:%s=%s:%s' "$ROLE" "$BROKER_VERSION" "$KERNEL_PACKAGE" \
        "$KERNEL_DEB_VERSION" "$1" | sha256sum | cut -c1-32)
    printf '%s-%s-4%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" \
        $((0x${h:16:1} & 0x3 | 0x8)) "${h:17:3}" "${h:20:12}"
}

# ----------------------------------------------------------------------------------------------
step "packages"
"$IMAGES/install-deps.sh"
step_done

BROKER_VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
[[ -n "$BROKER_VERSION" ]] || die "cannot read the workspace version from Cargo.toml"
GIT_HASH=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [[ "$GIT_HASH" != unknown && -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    GIT_HASH="$GIT_HASH-dirty"
fi
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 1767225600)
fi
export SOURCE_DATE_EPOCH
FAKETIME_AT="$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S')"
echo "       role=$ROLE broker=$BROKER_VERSION ($GIT_HASH) kernel=$KERNEL_PACKAGE=$KERNEL_DEB_VERSION SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"

# ----------------------------------------------------------------------------------------------
if [[ -n "${HALYARD_BROKER_BIN:-}" ]]; then
    # A prebuilt broker (e.g. from CI's build step); it must be static as well.
    step "broker: prebuilt $HALYARD_BROKER_BIN"
    BROKER_BIN=$HALYARD_BROKER_BIN
else
    step "broker: static release build ($TARGET_TRIPLE, target dir $TARGET_DIR)"
    CARGO_TARGET_DIR="$TARGET_DIR" "$IMAGES/build-broker.sh"
    BROKER_BIN="$TARGET_DIR/$TARGET_TRIPLE/release/halyard"
fi
[[ -x "$BROKER_BIN" ]] || die "no broker binary at $BROKER_BIN"
if readelf -l "$BROKER_BIN" | grep -q 'INTERP'; then
    die "$BROKER_BIN is dynamically linked"
fi
step_done "$(du -h "$BROKER_BIN" | cut -f1)"

# ----------------------------------------------------------------------------------------------
step "kernel: $KERNEL_PACKAGE=$KERNEL_DEB_VERSION"
mkdir -p "$WORK/deb"
DEB="$WORK/deb/${KERNEL_PACKAGE}_${KERNEL_DEB_VERSION}_amd64.deb"
if [[ ! -s "$DEB" ]]; then
    fetch_kernel() {
        (cd "$WORK/deb" && apt-get download "$KERNEL_PACKAGE=$KERNEL_DEB_VERSION" 2>&1 | grep -v 'unsandboxed') || true
    }
    fetch_kernel
    if [[ ! -s "$DEB" ]]; then
        # Package lists may be missing or stale on a fresh machine.
        apt-get update -qq && fetch_kernel
    fi
    [[ -s "$DEB" ]] || die "apt-get download $KERNEL_PACKAGE=$KERNEL_DEB_VERSION failed (is it still in the archive? see images/kernel.version)"
fi
KTREE="$WORK/kernel-$KERNEL_PACKAGE-$KERNEL_DEB_VERSION"
if [[ ! -f "$KTREE/.complete" ]]; then
    rm -rf "$KTREE"
    mkdir -p "$KTREE"
    dpkg-deb -x "$DEB" "$KTREE"
    KVER=$(basename "$(ls -d "$KTREE"/lib/modules/*)")
    depmod -b "$KTREE" "$KVER"
    touch "$KTREE/.complete"
fi
KVER=$(basename "$(ls -d "$KTREE"/lib/modules/*)")
VMLINUZ="$KTREE/boot/vmlinuz-$KVER"
[[ -f "$VMLINUZ" ]] || die "no kernel in $DEB"
step_done "$KVER"

# ----------------------------------------------------------------------------------------------
step "initramfs tree"
rm -rf "$STAGE"
IRD="$STAGE/initramfs"
mkdir -p "$IRD"/{bin,sbin,usr/bin,usr/sbin,etc/halyard,etc/acpi/PWRF,proc,sys,dev,run,tmp,var/lib/halyard,lib/modules/"$KVER"}
cp /bin/busybox "$IRD/bin/busybox"
ln -s busybox "$IRD/bin/sh"
install -m 0755 "$IMAGES/init/init" "$IRD/init"
install -m 0755 "$IMAGES/init/udhcpc.script" "$IRD/etc/udhcpc.script"
# Debug sections (line tables) are dropped; the symbol table stays for readable backtraces.
objcopy --strip-debug "$BROKER_BIN" "$IRD/usr/bin/halyard"
chmod 0755 "$IRD/usr/bin/halyard"
install -m 0644 "$IMAGES/config/$ROLE.toml" "$IRD/etc/halyard/halyard.toml"
install -m 0644 "$ROOT/kernel-tuning/$ROLE.conf" "$IRD/etc/halyard/sysctl.conf"
echo "$ROLE" >"$IRD/etc/halyard/role"
echo "broker=$BROKER_VERSION git=$GIT_HASH" >"$IRD/etc/halyard/build-info"
awk '!/^#/ && $3 == "nofile" && $2 == "soft" { print $4; exit }' "$ROOT/kernel-tuning/limits.conf" \
    >"$IRD/etc/halyard/nofile"
[[ -s "$IRD/etc/halyard/nofile" ]] || die "no soft nofile in kernel-tuning/limits.conf"
echo "$MODULES_ALWAYS" | tr ' ' '\n' >"$IRD/etc/halyard/modules.always"
printf '#!/bin/sh\n# ACPI power button: ask /init (PID 1) for a clean shutdown.\nkill -USR2 1\n' \
    >"$IRD/etc/acpi/PWRF/00000080"
chmod 0755 "$IRD/etc/acpi/PWRF/00000080"
printf 'root:x:0:0:root:/:/bin/sh\n' >"$IRD/etc/passwd"
printf 'root:x:0:\n' >"$IRD/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$IRD/etc/hosts"

# Modules with their dependencies, resolved through modules.dep (and softdeps named above).
DEPFILE="$KTREE/lib/modules/$KVER/modules.dep"
declare -A MODPATH=() MODDEPS=()
while IFS=: read -r path deps; do
    name=${path##*/}
    name=${name%%.ko*}
    MODPATH[${name//-/_}]=$path
    MODDEPS[$path]=$deps
done <"$DEPFILE"
declare -A WANT=()
queue=()
for m in $MODULES; do
    [[ -n "${MODPATH[$m]:-}" ]] || die "module $m not in $KVER"
    queue+=("${MODPATH[$m]}")
done
while [[ ${#queue[@]} -gt 0 ]]; do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    [[ -n "${WANT[$p]:-}" ]] && continue
    WANT[$p]=1
    for d in ${MODDEPS[$p]}; do
        [[ -n "${WANT[$d]:-}" ]] || queue+=("$d")
    done
done
for p in "${!WANT[@]}"; do
    mkdir -p "$IRD/lib/modules/$KVER/$(dirname "$p")"
    cp "$KTREE/lib/modules/$KVER/$p" "$IRD/lib/modules/$KVER/$p"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
    cp "$KTREE/lib/modules/$KVER/$f" "$IRD/lib/modules/$KVER/$f"
done
depmod -b "$IRD" "$KVER"
NMOD=${#WANT[@]}
step_done "$NMOD modules"

# ----------------------------------------------------------------------------------------------
step "initramfs cpio (sorted, fixed times and owners) + zstd"
find "$IRD" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
INITRD="$STAGE/initrd.cpio.zst"
(cd "$IRD" && find . -print0 | sort -z | cpio --null --create --format=newc --reproducible \
    --owner=0:0 --quiet) | zstd -q -9 -T1 >"$INITRD"
step_done "$(du -h "$INITRD" | cut -f1)"

# ----------------------------------------------------------------------------------------------
step "unified kernel image (objcopy onto systemd-boot's stub)"
# quiet: warnings and errors only (the EFI stub and the kernel print less on a slow console);
# cryptomgr.notests: no self-tests of the crypto algorithms at boot (seconds under emulation).
CMDLINE="console=tty0 console=ttyS0,115200 panic=10 quiet cryptomgr.notests"
printf '%s' "$CMDLINE" >"$STAGE/cmdline"
printf 'NAME="Halyard"\nID=halyard\nPRETTY_NAME="Halyard %s (%s)"\nVERSION_ID=%s\nBUILD_ID=%s\n' \
    "$BROKER_VERSION" "$ROLE" "$BROKER_VERSION" "$GIT_HASH" >"$STAGE/os-release"
printf '%s' "$KVER" >"$STAGE/uname"
# Place each section after the previous one, 4 KiB aligned, after the stub's last section.
align() { echo $(((($1) + 4095) / 4096 * 4096)); }
last=$(objdump -h "$STUB" | awk '$1 ~ /^[0-9]+$/ { vma = $4; size = $3 } END { print vma, size }')
next=$(align "0x${last% *} + 0x${last#* }")
args=()
for sec in osrel:os-release cmdline:cmdline uname:uname linux:vmlinuz initrd:initrd; do
    name=${sec%%:*}
    case "${sec#*:}" in
        vmlinuz) file=$VMLINUZ ;;
        initrd) file=$INITRD ;;
        *) file="$STAGE/${sec#*:}" ;;
    esac
    args+=(--add-section ".$name=$file" --change-section-vma ".$name=$(printf '0x%x' "$next")")
    next=$(align "$next + $(stat -Lc%s "$file")")
done
UKI="$STAGE/BOOTX64.EFI"
faketime -f "$FAKETIME_AT" objcopy "${args[@]}" "$STUB" "$UKI"
step_done "$(du -h "$UKI" | cut -f1)"

# ----------------------------------------------------------------------------------------------
step "EFI system partition (mkfs.vfat + mcopy under faketime)"
ESP="$STAGE/esp.img"
rm -f "$ESP"
ESP_VOLID=$(uuid_for esp-volid | tr -d '-' | cut -c1-8)
faketime -f "$FAKETIME_AT" mkfs.vfat -F 32 -S 512 -s 1 --invariant -i "$ESP_VOLID" -n HALYARD-ESP \
    -C "$ESP" $((ESP_MIB * 1024)) >/dev/null
(( $(stat -c%s "$UKI") < (ESP_MIB - 2) * 1024 * 1024 )) || die "UKI does not fit the ${ESP_MIB} MiB ESP"
touch -d "@$SOURCE_DATE_EPOCH" "$UKI"
faketime -f "$FAKETIME_AT" mmd -i "$ESP" ::/EFI ::/EFI/BOOT
faketime -f "$FAKETIME_AT" mcopy -m -i "$ESP" "$UKI" ::/EFI/BOOT/BOOTX64.EFI
step_done "$ESP_MIB MiB"

# ----------------------------------------------------------------------------------------------
step "data partition (ext4, label halyard-data)"
DATA=""
if [[ "$ROLE" == core ]]; then
    DATA="$STAGE/data.img"
    rm -f "$DATA"
    FS_UUID=$(uuid_for data-fs)
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH faketime -f "$FAKETIME_AT" mkfs.ext4 -q -F \
        -L halyard-data -U "$FS_UUID" -m 0 -b 4096 -N 1024 \
        -E "root_owner=0:0,hash_seed=$(uuid_for data-hash-seed),lazy_itable_init=0,lazy_journal_init=0,nodiscard" \
        "$DATA" "${DATA_MIB}M" >/dev/null
    step_done "$DATA_MIB MiB, UUID $FS_UUID"
else
    step_done "none: replicant runs from RAM"
fi

# ----------------------------------------------------------------------------------------------
step "GPT disk (sgdisk on a sparse file, partitions written with dd conv=notrunc)"
mkdir -p "$OUT"
RAW="$OUT/halyard-$ROLE.raw"
rm -f "$RAW"
# 1 MiB for the primary GPT and alignment, the partitions, 1 MiB for the backup GPT.
DISK_MIB=$((1 + ESP_MIB + 1))
[[ -n "$DATA" ]] && DISK_MIB=$((DISK_MIB + DATA_MIB))
truncate -s "${DISK_MIB}M" "$RAW"
sg=(--clear --disk-guid="$(uuid_for disk)"
    "--new=1:2048:+${ESP_MIB}M" --typecode=1:ef00 --change-name=1:ESP --partition-guid=1:"$(uuid_for esp-part)")
if [[ -n "$DATA" ]]; then
    sg+=("--new=2:0:+${DATA_MIB}M" --typecode=2:8300 --change-name=2:halyard-data
        --partition-guid=2:"$(uuid_for data-part)")
fi
sgdisk "${sg[@]}" "$RAW" >/dev/null
dd if="$ESP" of="$RAW" bs=1M seek=1 conv=notrunc,sparse status=none
if [[ -n "$DATA" ]]; then
    dd if="$DATA" of="$RAW" bs=1M seek=$((1 + ESP_MIB)) conv=notrunc,sparse status=none
fi
sgdisk --verify "$RAW" >/dev/null || die "sgdisk --verify failed"
step_done "$DISK_MIB MiB"

# ----------------------------------------------------------------------------------------------
step "qcow2 (qemu-img convert -c) and manifest"
QCOW="$OUT/halyard-$ROLE.qcow2"
rm -f "$QCOW"
qemu-img convert -q -c -f raw -O qcow2 "$RAW" "$QCOW"
MANIFEST="$OUT/halyard-$ROLE.manifest.json"
sha() { sha256sum "$1" | cut -d' ' -f1; }
{
    printf '{\n'
    printf '  "role": "%s",\n' "$ROLE"
    printf '  "broker": { "version": "%s", "git": "%s" },\n' "$BROKER_VERSION" "$GIT_HASH"
    printf '  "kernel": { "package": "%s", "package_version": "%s", "release": "%s" },\n' \
        "$KERNEL_PACKAGE" "$KERNEL_DEB_VERSION" "$KVER"
    printf '  "source_date_epoch": %s,\n' "$SOURCE_DATE_EPOCH"
    printf '  "cmdline": "%s",\n' "$CMDLINE"
    printf '  "files": {\n'
    printf '    "halyard-%s.raw": { "bytes": %s, "sha256": "%s" },\n' "$ROLE" "$(stat -c%s "$RAW")" "$(sha "$RAW")"
    printf '    "halyard-%s.qcow2": { "bytes": %s, "sha256": "%s" }\n' "$ROLE" "$(stat -c%s "$QCOW")" "$(sha "$QCOW")"
    printf '  },\n'
    printf '  "components": {\n'
    printf '    "uki": { "bytes": %s, "sha256": "%s" },\n' "$(stat -c%s "$UKI")" "$(sha "$UKI")"
    printf '    "initrd": { "bytes": %s, "sha256": "%s", "modules": %s },\n' "$(stat -c%s "$INITRD")" "$(sha "$INITRD")" "$NMOD"
    printf '    "broker": { "bytes": %s, "sha256": "%s" }\n' "$(stat -c%s "$BROKER_BIN")" "$(sha "$BROKER_BIN")"
    printf '  }\n'
    printf '}\n'
} >"$MANIFEST"
step_done

awk -v a="$T0" -v b="$(date +%s.%N)" -v r="$ROLE" 'BEGIN { printf "built %s in %.1fs:\n", r, b - a }'
for f in "$RAW" "$QCOW" "$MANIFEST"; do
    printf '  %-48s %8s  %s\n' "${f#"$ROOT"/}" "$(du -h --apparent-size "$f" | cut -f1)" "$(sha "$f")"
done
