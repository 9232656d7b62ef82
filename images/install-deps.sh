#!/usr/bin/env bash
# Install the Debian packages the image build, boot and boot test need.
#
# Idempotent and quick when everything is already present (one dpkg-query call).
#
# Pitfall handled here: the machine ships qemu-utils from bookworm-backports (10.x). Installing
# qemu-system-x86 from bookworm main would downgrade/remove qemu-utils (and qemu-img with it), so
# qemu-system-x86 comes from bookworm-backports too. The backports suite is added by deriving it
# from the machine's existing apt source (same mirror URI and keyring); no mirror host is written
# here.
set -euo pipefail

# Packages for build.sh (busybox-static .. e2fsprogs, faketime, qemu-img), boot.sh (ovmf,
# qemu-system-x86) and test-boot.sh (mosquitto-clients, curl).
PACKAGES=(busybox-static kmod cpio zstd systemd-boot-efi binutils mtools dosfstools gdisk
    e2fsprogs faketime ovmf qemu-system-x86 qemu-utils mosquitto-clients curl)

missing=()
for p in "${PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]]; then
        missing+=("$p")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
echo "install-deps: missing: ${missing[*]}"

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
# Version of qemu-utils already on the machine ("" when absent).
qemu_utils_version="$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)"
use_backports=0
if [[ "$qemu_utils_version" == *bpo* ]]; then
    use_backports=1
fi

# Print a deb822 stanza for "$codename-backports" derived from the first existing source that
# serves "$codename" (same URIs, components and Signed-By). Supports deb822 .sources files and
# one-line .list files.
derive_backports_source() {
    local f out
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        out="$(awk -v want="$codename" '
            function flush() {
                if (uris != "" && suites_ok) {
                    print "Types: deb"; print "URIs: " uris; print "Suites: " want "-backports";
                    print "Components: " comps; if (signed != "") print "Signed-By: " signed;
                    found = 1; exit
                }
                uris = ""; comps = ""; signed = ""; suites_ok = 0; debtype = 0
            }
            /^[ \t]*$/ { flush(); next }
            /^#/ { next }
            /^Types:/ { debtype = ($0 ~ /(^|[ :])deb([ ]|$)/) }
            /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
            /^Components:/ { sub(/^Components:[ \t]*/, ""); comps = $0 }
            /^Signed-By:/ { sub(/^Signed-By:[ \t]*/, ""); signed = $0 }
            /^Suites:/ { n = split($0, s, /[ \t]+/); for (i = 2; i <= n; i++) if (s[i] == want) suites_ok = 1 }
            END { if (!found) flush() }
        ' "$f")"
        if [[ -n "$out" ]]; then
            echo "$out"
            return 0
        fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        # deb [options] URI suite components...
        local line
        line="$(awk -v want="$codename" '$1 == "deb" { i = 2; opts = "";
                if ($2 ~ /^\[/) { while ($i !~ /\]$/) { opts = opts " " $i; i++ } opts = opts " " $i; i++ }
                if ($(i + 1) == want) { printf "deb%s %s %s-backports", opts, $i, want;
                    for (j = i + 2; j <= NF; j++) printf " %s", $j; print ""; exit } }' "$f")"
        if [[ -n "$line" ]]; then
            echo "LIST:$line"
            return 0
        fi
    done
}

if [[ "$use_backports" -eq 1 ]]; then
    if ! grep -rqs -- "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        src="$(derive_backports_source)"
        if [[ -z "$src" ]]; then
            echo "install-deps: no apt source for '$codename' found to derive ${codename}-backports from" >&2
            exit 1
        fi
        if [[ "$src" == LIST:* ]]; then
            echo "${src#LIST:}" | "${SUDO[@]}" tee "/etc/apt/sources.list.d/${codename}-backports.list" >/dev/null
        else
            echo "$src" | "${SUDO[@]}" tee "/etc/apt/sources.list.d/${codename}-backports.sources" >/dev/null
        fi
        echo "install-deps: added ${codename}-backports (derived from the existing apt source)"
    fi
fi

"${SUDO[@]}" apt-get update -qq
main_pkgs=()
bpo_pkgs=()
for p in "${missing[@]}"; do
    case "$p" in
        qemu-system-x86 | qemu-utils)
            if [[ "$use_backports" -eq 1 ]]; then bpo_pkgs+=("$p"); else main_pkgs+=("$p"); fi
            ;;
        *) main_pkgs+=("$p") ;;
    esac
done
if [[ ${#main_pkgs[@]} -gt 0 ]]; then
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${main_pkgs[@]}"
fi
if [[ ${#bpo_pkgs[@]} -gt 0 ]]; then
    # -t: qemu-system-x86's dependencies (qemu-system-common/-data, seabios) must come from
    # backports too. qemu-utils is named so that apt keeps it in backports instead of resolving
    # the conflict by removing it.
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends -t "${codename}-backports" \
        "${bpo_pkgs[@]}" qemu-utils
fi

# Refuse to report success if qemu-img went missing.
command -v qemu-img >/dev/null || { echo "install-deps: qemu-img is missing after install" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "install-deps: qemu-system-x86_64 missing" >&2; exit 1; }
echo "install-deps: done"
