// Bitmap: the per-volume metadata of one node (docs/bitmap-format.md): the
// header (identity, generation ids, flags, resync cursor), the coarse
// activity map and the fine dirty map, held in memory and persisted to one
// file by group commits on the io_uring Loop. The file's bytes are
// bitmap_format.h's business.
//
// Thread and lifetime contract: a Bitmap belongs to the thread of its Loop and
// is used only there. It must outlive every commit it started: destroy it
// when !commit_running(), or after its Loop stopped for good. Waiters passed to
// commit() must stay valid until their io_done ran.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend.h"        // IoDone
#include "bitmap_format.h"  // Generation
#include "buffer.h"
#include "file_lock.h"
#include "power_loss.h"
#include "result.h"
#include "unique_fd.h"
#include "uring.h"

namespace mirror {

// Header flags (the superblock's u32; other bits are stored as given).
inline constexpr uint32_t kFlagCleanShutdown = 1;
inline constexpr uint32_t kFlagPrimary = 2;
inline constexpr uint32_t kFlagDisposableLocalWrites = 4;
inline constexpr uint32_t kFlagFullSyncNeeded = 8;
// This copy is being resynced and is not a consistent image until the
// primary sends SYNC_DONE (a secondary's flag).
inline constexpr uint32_t kFlagInconsistent = 1u << 16;
// The mirror is split (both nodes); kept until rejoin, across restarts.
inline constexpr uint32_t kFlagSplit = 1u << 17;
// This node's disk failed a write and was detached (on-io-error = detach):
// its data is outdated, the peer holds the only current copy. A node with it
// never serves again until --discard-my-data (a full copy from the peer).
inline constexpr uint32_t kFlagDiskFailed = 1u << 18;
// The primary detached its failed disk: this copy is the only current one
// (a secondary's flag; promote needs no --force). Cleared by promote and by
// a resync into this copy.
inline constexpr uint32_t kFlagPeerDiskFailed = 1u << 19;
// This node's metadata was lost (created, or no superblock readable) while
// its copy held data: whether that copy is older or newer than the peer's is
// unknown (after a failover it may be the only current one). A full sync
// into it from a primary whose metadata is intact waits for the operator
// (--discard-my-data). Cleared once a plan with the peer is adopted.
inline constexpr uint32_t kFlagCopyUnknown = 1u << 20;
// New metadata (created here) that has agreed no plan with the peer yet.
// initial-sync = skip lets two such nodes adopt each other's copies as
// identical (a new pair); a node without it gives a peer with new metadata
// a full copy (a replaced disk). Cleared at the first plan adopted.
inline constexpr uint32_t kFlagUnpaired = 1u << 21;
// The operator's word on a new pair's primary (`promote --force
// --identical`): both copies are identical, so a peer with new metadata
// adopts this one without a copy even if its disk holds data of unknown
// history (kFlagCopyUnknown). Cleared with kFlagUnpaired.
inline constexpr uint32_t kFlagAssertIdentical = 1u << 22;
// With kFlagCopyUnknown, after a reset whose superblock recorded
// "secondary": the copy's history is unknown but it is never newer than
// the peer's (a secondary's own writes are tracked as disposable), so a
// primary with a history may give it a full copy without the operator; a
// primary of unknown history may not. Cleared with kFlagCopyUnknown.
inline constexpr uint32_t kFlagCopyNotNewer = 1u << 23;
inline constexpr uint32_t kFlagsCopyUnknown = kFlagCopyUnknown | kFlagCopyNotNewer;
// Facts about the copies, not about the maps: a reset after a readable
// superblock keeps them. Forgotten, a detached disk's outdated copy would
// start as primary and full-sync over the only current one; a split image
// would be overwritten without a rejoin; a half-resynced copy would pass
// for a consistent image.
inline constexpr uint32_t kFlagsKeptOnReset = kFlagPrimary | kFlagDiskFailed |
                                              kFlagPeerDiskFailed | kFlagSplit |
                                              kFlagInconsistent | kFlagsCopyUnknown;

// Who this metadata belongs to. volume, node and peer: at most 64 bytes, no
// NUL. granularity, al_extent: powers of two, 4096 .. 2^31.
struct MetaIdentity {
  std::string volume;
  uint64_t volume_size = 0;
  std::string node, peer;
  uint32_t granularity = 65536;
  uint32_t al_extent = 4 << 20;
};

struct BitmapOpenReport {
  bool created = false;               // the file did not exist (implies full_resync)
  bool full_resync = false;           // every dirty bit set, kFlagFullSyncNeeded set
  std::string reason;                 // why full_resync ("metadata <path>: ...: full resync")
  std::vector<std::string> warnings;  // recovered defects (bad map blocks, a bad slot)
  // The role (kFlagPrimary) a readable superblock recorded, even if the
  // metadata was then reset (foreign identity, missing maps): a node's role
  // is a fact about its copy, which the reset does not change. The reset
  // keeps it in the flags, with the disk failures (kFlagsKeptOnReset).
  std::optional<bool> recorded_primary;
};

class Bitmap {
 public:
  struct Stats {
    uint64_t commits_started = 0;
    uint64_t commits_completed = 0;  // durable (successful) commits
    uint64_t blocks_written = 0;     // map blocks, both maps
    uint64_t superblocks_written = 0;
  };

  // Opens (flock LOCK_EX) and loads the metadata file, creating it if missing.
  // Unusable metadata is not an error: it yields a full-resync bitmap and a
  // reason (see the format doc). Errors: EINVAL (bad identity), EBUSY (locked
  // by another process), and I/O errors. `report` may be nullptr.
  static Result<std::unique_ptr<Bitmap>> open(Loop& loop, const std::string& path,
                                              const MetaIdentity& id, BitmapOpenReport* report);
  ~Bitmap();
  Bitmap(const Bitmap&) = delete;
  Bitmap& operator=(const Bitmap&) = delete;

  // Dirty map (fine). Ranges are byte ranges of the volume, clipped to its
  // size. set: every region touched by [off, off+len). clear: only regions
  // lying wholly inside the range (the volume's short last region counts as
  // whole when the range reaches the end of the volume).
  void set_dirty(uint64_t off, uint64_t len);
  void clear_dirty(uint64_t off, uint64_t len);
  void set_all_dirty();
  void clear_all_dirty();
  bool any_dirty(uint64_t off, uint64_t len) const;
  // The number of the commit after which the dirty bits of the range, as
  // they are in memory now, are on stable storage (0: they already are).
  // Compare with committed(): a write acknowledged before its bit is durable
  // is safe only while something else covers it (an active extent).
  uint64_t dirty_durable_after(uint64_t off, uint64_t len) const;
  // True once commit number `n` (and so every commit before it) completed.
  bool committed(uint64_t n) const { return stats_.commits_completed >= n; }
  // Bytes covered by set bits (the short last region counts its real size). O(1).
  uint64_t dirty_bytes() const;
  // The first run of consecutive dirty regions in regions at or after the one
  // holding `from`. *off is region aligned (so it may precede an unaligned
  // `from`); *len is at most max_len rounded down to whole regions, but at
  // least one region, and ends at most at the volume size. False if none.
  bool next_dirty(uint64_t from, uint64_t max_len, uint64_t* off, uint64_t* len) const;

  // Activity map (coarse), same range semantics at al_extent granularity.
  void set_active(uint64_t off, uint64_t len);
  void clear_active(uint64_t off, uint64_t len);
  // True if every extent touched by the range is set in memory (false for an
  // empty range).
  bool is_active(uint64_t off, uint64_t len) const;
  // ... and set on stable storage: no commit that may clear it is in flight.
  bool is_active_durable(uint64_t off, uint64_t len) const;
  // Marks every region of every active extent dirty (crash recovery); returns
  // the bytes newly marked. The activity bits stay as they are.
  uint64_t active_to_dirty();

  // Header. Setters mark the superblock changed only if the value changes.
  const Generation& generation() const { return gen_; }
  void set_generation(const Generation& g);
  uint32_t flags() const { return flags_; }
  void set_flags(uint32_t f);
  // A header change whose commit failed, put back in memory so that what
  // this node reports is what is on disk: the generation, if its current id
  // is still the one the change set, and the flag bits the change touched
  // (flags_before ^ flags_after; a flag set meanwhile stays).
  void undo_header_change(const Generation& before, uint64_t set_current, uint32_t flags_before,
                          uint32_t flags_after);
  uint64_t resync_cursor() const { return cursor_; }
  void set_resync_cursor(uint64_t c);
  uint32_t granularity() const { return id_.granularity; }
  uint32_t al_extent() const { return id_.al_extent; }
  uint64_t volume_size() const { return id_.volume_size; }

  // Group commit: persists every change made so far (changed map blocks, the
  // superblock if a header field changed), then fdatasync, then calls
  // waiter->io_done(0 or -errno); never inline. Waiters arriving while a
  // commit runs are served by the next one. nullptr: persist in the
  // background. A failed write or sync is sticky: every later commit fails
  // with the same error.
  void commit(IoDone* waiter);
  bool commit_running() const { return running_; }
  // A write or sync failed: nothing more reaches the disk (sticky).
  bool failed() const { return sticky_error_ != 0; }
  // Synchronous write of every change + fdatasync, for a clean exit (not the
  // data path). EBUSY while a commit runs; the sticky error if one happened.
  Status flush_sync();

  // Grows the volume this metadata describes to new_size bytes (a valid size above
  // volume_size()): keeps every dirty and active bit, marks every region touched by
  // [old size, new_size) dirty when new_area_dirty (this includes the old short last region,
  // which now covers new bytes), and rewrites the whole file in the new layout, durable
  // before it returns (synchronous I/O: an admin operation, not the data path).
  // Errors: EBUSY while a commit runs, EINVAL for a size not above the current one or
  // invalid (the same rules as open's identity), the sticky error if one happened, I/O
  // errors (the in-memory state then stays the old size and the file is safe to reopen);
  // ENOSPC / EDQUOT from a full filesystem say so, with the bytes the grown file needs.
  Status grow(uint64_t new_size, bool new_area_dirty);

  const std::string& path() const { return path_; }
  const Stats& stats() const { return stats_; }

  // Tests: replaces the file descriptor used by later writes (e.g. with an
  // O_RDONLY one, to make them fail).
  void replace_fd_for_testing(UniqueFd fd) { fd_ = std::move(fd); }
  // Tests: called by every whole-file rewrite (open's, grow's) once the maps
  // are durable and before the superblocks are written: the point where a
  // crash leaves new maps under the old superblocks. An error return stops
  // the rewrite there, as a crash would, and is returned as its error.
  void set_rewrite_hook_for_testing(std::function<Status()> hook) {
    rewrite_hook_ = std::move(hook);
  }
  // Fault injection (MIRRORD_FAULTS=power-loss): later commits record their
  // unsynced writes in `pl` (which must outlive this Bitmap), so that a
  // simulated power loss drops them.
  void set_power_loss(PowerLoss* pl) { power_loss_ = pl; }
  // Fault injection (MIRRORD_FAULTS=meta-eio-after=N): commits after the
  // first N fail with EIO as if the disk had refused them (0: never).
  void set_fail_commits_after(uint64_t n) { fail_commits_after_ = n; }
  // Fault injection (MIRRORD_FAULTS=meta-delay-ms=N): every commit completes
  // N ms after its fdatasync did (a slow metadata disk), to widen races
  // between a commit and what happens meanwhile (0: no delay).
  void set_commit_delay_ms(uint64_t ms);

 private:
  struct Map;
  struct Run;
  struct WriteOp;
  enum class LoadOutcome : int;

  Bitmap(Loop& loop, UniqueFd fd, std::string path, const MetaIdentity& id);

  // Empty maps (and their change tracking) in the layout of a volume of
  // `size` bytes under id_'s granularity and al_extent.
  void init_maps(uint64_t size);
  // The in-memory half of grow(): the maps in the layout of new_size with
  // every bit kept, id_.volume_size = new_size, every block marked changed.
  void grow_maps(uint64_t new_size, bool new_area_dirty);

  // Range helpers shared by both maps.
  void set_bits(Map& m, uint64_t first, uint64_t end);
  void clear_bits(Map& m, uint64_t first, uint64_t end);
  void mark_changed(const Map& m, uint64_t word);

  bool has_changes() const { return header_changed_ || !changed_list_.empty(); }
  Result<LoadOutcome> load(uint64_t file_size, BitmapOpenReport& r, uint64_t* max_sequence,
                           uint32_t* kept_flags);
  // Everything dirty, generations zero; flags kFlagFullSyncNeeded | keep.
  void reset_fresh(uint32_t keep);
  Status rewrite_all(uint64_t min_sequence, bool created);
  void encode_superblock(uint8_t* blk, uint64_t sequence) const;
  void encode_map_block(const Map& m, uint64_t index, uint8_t* blk) const;
  void encode_changes();
  void apply_durable_snapshot();
  void start_commit();
  void submit_write(WriteOp* op);
  void on_write(WriteOp* op, int res);
  void on_sync(int res, uint32_t flags);
  void finish_commit(int err);
  void set_sticky(int err, const char* what);

  Loop& loop_;
  FileLock lock_;  // before fd_: released after the data descriptor closes
  UniqueFd fd_;
  std::string path_;
  MetaIdentity id_;
  uint64_t instance_ = 0;

  // Header.
  Generation gen_;
  uint32_t flags_ = 0;
  uint64_t cursor_ = 0;
  uint64_t sequence_ = 0;  // of the last superblock written or loaded
  bool header_changed_ = false;

  std::unique_ptr<Map> al_;  // activity
  std::unique_ptr<Map> dm_;  // dirty
  // Durable view of the activity map: set only where every state the disk
  // may hold has the bit set.
  std::vector<uint64_t> al_durable_;

  // Changed blocks, indexed in one space: activity blocks first, then dirty.
  std::vector<uint8_t> changed_;
  // Per block, the number of the last commit that encoded it.
  std::vector<uint64_t> block_commit_;
  std::vector<uint32_t> changed_list_;

  // The running commit.
  bool running_ = false;
  bool background_ = false;  // a nullptr commit arrived while one ran
  int sticky_error_ = 0;     // positive errno
  int commit_error_ = 0;
  size_t pending_writes_ = 0;
  Buffer staging_;
  std::vector<Run> runs_;
  std::vector<std::unique_ptr<WriteOp>> ops_;
  std::vector<uint64_t> al_snapshot_;  // words of the activity blocks written
  std::vector<uint32_t> al_snapshot_blocks_;
  std::vector<IoDone*> current_;  // served by the running commit
  std::vector<IoDone*> waiting_;  // served by the next commit
  MemberCompletion<Bitmap, &Bitmap::on_sync> sync_completion_{this};
  Stats stats_;
  PowerLoss* power_loss_ = nullptr;
  uint64_t power_loss_sync_ = 0;
  uint64_t fail_commits_after_ = 0;
  uint64_t commit_delay_ms_ = 0;
  int delayed_result_ = 0;
  std::unique_ptr<Timer> delay_timer_;
  std::function<Status()> rewrite_hook_;
};

// The extents of the dirty map over [offset, offset+length) for an NBD
// metadata context: flag 1 for changed regions, 0 for the others, merged
// runs, at most max_extents, clipped to the range.
void changed_extents(const Bitmap& map, uint64_t offset, uint32_t length, uint32_t max_extents,
                     std::vector<nbd::Extent>* out);

}  // namespace mirror
