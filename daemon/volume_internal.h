// What volume.cc and its companions (volume_commands.cc, volume_failover.cc,
// volume_plan.cc, volume_relay.cc, volume_resize.cc) share and nobody else
// needs. Not part of the Volume's interface.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "volume.h"

namespace mirror::volume_internal {

// What an operator reads when a split brain stops a command.
inline constexpr const char* kSplitBrainHelp =
    "split brain: both nodes changed the data since they last agreed, and nothing was "
    "overwritten. Choose the survivor: on the other node (the victim, whose changes are lost) "
    "run `mirrorctl discard-my-data` (or restart it once with `mirrord --discard-my-data`); "
    "it becomes secondary and the survivor copies back the regions either node changed";

// What an operator reads when this node's disk is detached and a command
// needs it.
inline constexpr const char* kDisklessHelp =
    "this node's disk failed and is detached (diskless): every request is served by the "
    "peer's copy, the only current one. To end it: stop the application, stop mirrord here, "
    "promote the peer (`mirrorctl promote` there; it needs --force only if it never learned "
    "of this failure), replace this disk, then start mirrord here once with "
    "--discard-my-data (it becomes secondary and takes a full copy)";

// The metadata flags of a node whose data lost a split brain (the operator
// ran discard-my-data): secondary, and nothing of its own kept; the peer
// sends a full copy. Persisted, so a restart before the copy ends still
// takes it. What a restart with --discard-my-data records: it is also how a
// replaced disk is filled, and nothing here knows the disk is the same.
inline uint32_t discard_my_data_flags(uint32_t flags) {
  flags |= kFlagFullSyncNeeded | kFlagInconsistent;
  flags &= ~(kFlagSplit | kFlagDisposableLocalWrites | kFlagPrimary | kFlagDiskFailed |
             kFlagPeerDiskFailed | kFlagsCopyUnknown);
  return flags;
}

// Whether `why` differs from the reason last logged, which it becomes: a
// refusal met again at every retried handshake is logged once per streak.
inline bool new_reason(std::string& last, const std::string& why) {
  return std::exchange(last, why) != why;
}

// Whether generation id `id` is one of `g`'s (current, bitmap or history):
// the copy described by `g` descends from the data `id` named.
inline bool holds_id(const link::Generation& g, uint64_t id) {
  return id != 0 && (g.current == id || g.bitmap == id || g.history0 == id || g.history1 == id);
}

// Whether the backing store `fd` may hold data in the volume's first `size`
// bytes: false only for a regular file that is one hole there (a new file:
// nothing to lose; bytes past the volume's end are not the volume's). A
// block device, or a file system without SEEK_DATA, counts as holding data.
inline bool may_hold_data(int fd, uint64_t size) {
  off_t first = ::lseek(fd, 0, SEEK_DATA);
  if (first < 0) return errno != ENXIO;
  return uint64_t(first) < size;
}

// Whether a running node that loses a split brain can have only its own
// changes undone (DRBD's resync after `connect --discard-my-data`) rather
// than take a full copy: its dirty map must hold every region it changed
// since the generation it last shared (`bitmap`, set when it went on alone),
// which a copy that was already mid-resync, or whose metadata was lost,
// cannot vouch for.
inline bool discard_by_regions(uint32_t flags, uint64_t bitmap_id) {
  return bitmap_id != 0 &&
         !(flags & (kFlagFullSyncNeeded | kFlagInconsistent | kFlagDiskFailed));
}

// The flags for that: secondary, not a usable image (kFlagInconsistent: its
// export refuses reads, promote needs --force), its changes kept marked as
// disposable (as a split secondary's after open-rw), so the survivor's plan
// is UNION: its own changes and these are copied from it, and an interrupted
// resync sends them again. Persisted like the full form.
inline uint32_t discard_changes_flags(uint32_t flags) {
  flags |= kFlagDisposableLocalWrites | kFlagInconsistent;
  flags &= ~(kFlagSplit | kFlagPrimary | kFlagPeerDiskFailed);
  return flags;
}

// How long a secondary's resync plan waits for the reads of the image it
// replaces (the primary holds its writes meanwhile).
inline constexpr uint64_t kPlanQuiesceMs = 1000;

// Ids of the Volume's own requests on the link (the Replicator's are small).
inline constexpr uint64_t kControlIdBit = uint64_t(1) << 63;

}  // namespace mirror::volume_internal

namespace mirror {

// One connection with the peer, from HELLO to its end (the active one is
// Volume::active_).
struct Volume::Session {
  std::unique_ptr<LinkConn> conn;
  bool outbound = false;
  enum class Phase { kHello, kAuth, kState, kPlan, kActive } phase = Phase::kHello;
  Nonce nonce{};
  link::Hello hello;
  uint16_t peer_features = 0;  // HELLO's header flags (link::kFeature*)
  uint64_t started_ms = 0;
  uint64_t last_rx_ms = 0;  // when the last message came (the coarse tick clock)
  uint64_t plan_id = 0;
  link::Plan::Kind plan = link::Plan::kInSync;
  // The replicator whose new writes wait from the plan's decision until
  // activate() (or until this session ends): see begin_plan_hold().
  Replicator* plan_hold = nullptr;
  bool gone = false;  // closed: pending callbacks must not touch it
};

// An online resize running (volume_resize.cc): the command on this node,
// or, on a secondary, the RESIZE it is answering.
struct Volume::Resize {
  Done done;                 // the command (none on a secondary answering RESIZE)
  uint64_t from = 0, to = 0;
  bool assume_clean = false;
  bool alone = false;        // the link is down: this node grows alone
  bool paused = false;       // the replicator's writes wait (resume_writes)
  uint64_t paused_at_ms = 0;  // since when (logged when they go on)
  int flush_rounds = 0;       // the flushes before the pause, so far
  uint64_t flush_started_ms = 0;
  uint64_t id = 0;           // the RESIZE sent, until its reply (0: none)
  uint64_t deadline_ms = 0;  // of that reply
  // The backing file's length before this resize extended it (0: it did
  // not), put back if the resize fails before the peer may have grown.
  uint64_t file_was = 0;
  bool peer_may_grow = false;  // RESIZE sent and not refused
};

}  // namespace mirror
