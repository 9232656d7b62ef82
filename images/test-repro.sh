#!/usr/bin/env bash
# Reproducibility test: images/test-repro.sh [core|replicant]
#
# Records the sha256 of images/out/halyard-ROLE.{raw,qcow2,manifest.json} (built just before by
# images/build.sh ROLE), builds the same role again from the same tree and fails unless every
# file is byte-for-byte identical. The broker binary is not recompiled (cargo finds it up to
# date), so this costs one image assembly (~20-40 s).
set -euo pipefail

VALID_ROLES="core replicant"
ROLE="${1:-replicant}"
ROLE="${ROLE#role=}"
case " $VALID_ROLES " in
    *" $ROLE "*) ;;
    *) echo "unknown role '$ROLE' (valid: $VALID_ROLES)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
OUT=images/out
files=("$OUT/halyard-$ROLE.raw" "$OUT/halyard-$ROLE.qcow2" "$OUT/halyard-$ROLE.manifest.json")
for f in "${files[@]}"; do
    [ -f "$f" ] || { echo "FAIL [$ROLE]: $f missing: run images/build.sh $ROLE first" >&2; exit 1; }
done
before=$(sha256sum "${files[@]}")
images/build.sh "$ROLE" >/dev/null
after=$(sha256sum "${files[@]}")
if [ "$before" != "$after" ]; then
    echo "FAIL [$ROLE]: a rebuild from the same tree gave different bytes" >&2
    diff <(echo "$before") <(echo "$after") >&2 || true
    exit 1
fi
echo "ok   [$ROLE]: rebuilt byte-for-byte identical:"
echo "$after" | sed 's/^/       /'
