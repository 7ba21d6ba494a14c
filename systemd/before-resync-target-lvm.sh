#!/bin/sh
# EXAMPLE ONLY: read and adapt before use (installed as an example in
# share/doc/mirrord/examples; copy it, e.g. to /etc/mirrord/, and name it in the volume file).
#
# mirrord's before-resync-target handler (docs/configuration.md, "Handlers"),
# like DRBD's snapshot-resync-target-lvm.sh: before a resync makes this
# secondary's copy inconsistent, take an LVM snapshot of its backing logical
# volume, so a consistent image exists until the resync ends. mirrord writes
# nothing to the copy until this exits 0; a non-zero exit keeps the resync
# waiting (retried every 30 s, or at once by `mirrorctl rejoin` on the
# primary; `mirrorctl status` says why).
#
# Environment from mirrord: MIRROR_VOLUME, MIRROR_NODE, MIRROR_PEER,
# MIRROR_BACKING (e.g. /dev/vg0/db), MIRROR_PLAN (bitmap, union or full),
# MIRROR_RESYNC_BYTES (what the resync may overwrite: the primary's
# out-of-sync bytes, plus this copy's own changes for a union; the whole
# volume for a full sync).
# SNAPSHOT_SIZE (optional, lvcreate's -L or, ending in ORIGIN, -l): the
# copy-on-write space. By default the resync's bytes plus a quarter and 1 GiB
# for the client writes mirrored while it runs (they overwrite the origin
# too), capped at the origin's size; the origin's size for a full sync, which
# overwrites every block. A snapshot whose space runs out is invalidated by LVM:
# the consistent image it was for is lost.
set -eu

lv=$(lvs --noheadings -o lv_full_name "$MIRROR_BACKING" 2>/dev/null | tr -d ' ') || lv=
if [ -z "$lv" ]; then
    echo "before-resync-target: $MIRROR_BACKING is not an LVM logical volume; no snapshot" >&2
    exit 1   # refuse the resync: choose `exit 0` here to resync without a snapshot
fi
if [ -z "${SNAPSHOT_SIZE:-}" ]; then
    if [ "$MIRROR_PLAN" = full ] || [ -z "${MIRROR_RESYNC_BYTES:-}" ]; then
        SNAPSHOT_SIZE=100%ORIGIN
    else
        origin=$(lvs --noheadings --units b --nosuffix -o lv_size "$lv" | tr -d ' ')
        want=$((MIRROR_RESYNC_BYTES + MIRROR_RESYNC_BYTES / 4 + (1 << 30)))
        if [ "$want" -ge "$origin" ]; then
            SNAPSHOT_SIZE=100%ORIGIN
        else
            SNAPSHOT_SIZE=$(( (want + (1 << 20) - 1) >> 20 ))m
        fi
    fi
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
echo "before-resync-target: $MIRROR_VOLUME on $MIRROR_NODE: snapshot $vg/$snap of $lv ($SNAPSHOT_SIZE) before a $MIRROR_PLAN resync from $MIRROR_PEER" >&2
