#!/bin/sh
# EXAMPLE ONLY: read and adapt before use (installed as an example in
# share/doc/mirrord/examples; copy it, e.g. to /etc/mirrord/, and name it in the volume file).
#
# mirrord's after-resync-target handler (docs/configuration.md, "Handlers"),
# like DRBD's unsnapshot-resync-target-lvm.sh: the resync into this
# secondary's copy finished and the copy is consistent again, so the snapshot
# before-resync-target-lvm.sh took is no longer needed. mirrord does not wait
# for this; a failure is only logged (remove the snapshot by hand then).
#
# Environment from mirrord: MIRROR_VOLUME, MIRROR_NODE, MIRROR_PEER,
# MIRROR_BACKING.
set -eu
lv=$(lvs --noheadings -o lv_full_name "$MIRROR_BACKING" 2>/dev/null | tr -d ' ') || exit 0
[ -n "$lv" ] || exit 0
snap="${lv%%/*}/${lv##*/}-before-resync"
if lvs "$snap" >/dev/null 2>&1; then
    lvremove -f "$snap" >&2
    echo "after-resync-target: $MIRROR_VOLUME on $MIRROR_NODE: removed $snap" >&2
fi
