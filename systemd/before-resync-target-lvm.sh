#!/bin/sh
# EXAMPLE ONLY: read and adapt before use (installed as an example in
# share/doc/mirrord/examples; copy it, e.g. to /etc/mirrord/, and name it in the volume file).
#
# mirrord's before-resync-target handler (docs/configuration.md, "Handlers"),
# like DRBD's snapshot-resync-target-lvm.sh: before a resync makes this
# secondary's copy inconsistent, take an LVM snapshot of its backing logical
# volume, so a consistent image exists until the resync ends. mirrord writes
# nothing to the copy until this exits 0; a non-zero exit keeps the resync
# waiting (retried every 30 s, `mirrorctl status` says why).
#
# Environment from mirrord: MIRROR_VOLUME, MIRROR_NODE, MIRROR_PEER,
# MIRROR_BACKING (e.g. /dev/vg0/db), MIRROR_PLAN (bitmap, union or full).
# SNAPSHOT_SIZE: copy-on-write space for the blocks the resync overwrites
# (the out-of-sync bytes `mirrorctl status` shows on the primary, plus margin).
set -eu
SNAPSHOT_SIZE=${SNAPSHOT_SIZE:-10%ORIGIN}

lv=$(lvs --noheadings -o lv_full_name "$MIRROR_BACKING" 2>/dev/null | tr -d ' ') || lv=
if [ -z "$lv" ]; then
    echo "before-resync-target: $MIRROR_BACKING is not an LVM logical volume; no snapshot" >&2
    exit 1   # refuse the resync: choose `exit 0` here to resync without a snapshot
fi
snap="${lv##*/}-before-resync"
vg="${lv%%/*}"
# A snapshot left by an earlier attempt (this one failed later, or mirrord
# restarted) holds the image from before that attempt: the copy is unchanged
# since (mirrord runs this only while the copy is consistent), replace it.
if lvs "$vg/$snap" >/dev/null 2>&1; then
    lvremove -f "$vg/$snap" >&2
fi
if [ "$SNAPSHOT_SIZE" = "${SNAPSHOT_SIZE%ORIGIN}" ]; then
    lvcreate -s -n "$snap" -L "$SNAPSHOT_SIZE" "$lv" >&2
else
    lvcreate -s -n "$snap" -l "$SNAPSHOT_SIZE" "$lv" >&2
fi
echo "before-resync-target: $MIRROR_VOLUME on $MIRROR_NODE: snapshot $vg/$snap of $lv before a $MIRROR_PLAN resync from $MIRROR_PEER" >&2
