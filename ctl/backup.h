// The copy half of `mirrorctl backup`: reads the split secondary's stable
// image over NBD (libnbd) into a sparse file, skipping holes and zeroes
// (base:allocation) and, for an incremental backup, everything the
// secondary does not list as changed since the last backup point (the
// mirrord:dirty-since-backup metadata context, docs/nbd-server.md).
//
// The orchestration (split, backup-mark, rejoin) is in mirrorctl.cc.
#pragma once

#include <cstdint>
#include <string>

#include "result.h"

namespace mirror {

struct CopyStats {
  uint64_t size = 0;           // of the volume
  uint64_t changed_bytes = 0;  // considered: the whole volume, or its changed regions
  uint64_t data_bytes = 0;     // read and written
  uint64_t zero_bytes = 0;     // holes or zeroes: skipped (full) or punched (incremental)
  double seconds = 0;
};

struct CopyOptions {
  std::string uri;          // the secondary's export (nbd://, nbd+unix://)
  int fd = -1;              // destination, sized to the volume
  bool incremental = false; // only the changed regions; holes are punched
  bool bar = false;         // a progress bar (a terminal), else progress lines
  // No step (connecting, one block status or read) waits on the secondary
  // longer than this: a hung daemon fails the copy with ETIMEDOUT.
  int io_timeout_ms = 30000;
  int cancel_fd = -1;       // readable: stop the copy now (ECANCELED)
};

// The metadata context listing the regions changed since the last backup.
inline constexpr const char* kChangedContext = "mirrord:dirty-since-backup";

// Errors: ETIMEDOUT (the secondary did not answer in time), ECANCELED
// (cancel_fd became readable), libnbd's and the image file's errors.
Result<CopyStats> copy_image(const CopyOptions& o);

// Sidecar beside a backup image (PATH.mirrord.json): which volume and which
// backup point the image holds, so an incremental backup refuses an image
// it would not bring up to date.
struct BackupRecord {
  std::string volume;
  uint64_t size = 0;
  uint64_t point = 0;
};
std::string record_path(const std::string& image);
Result<BackupRecord> read_record(const std::string& image);
Status write_record(const std::string& image, const BackupRecord& r);

}  // namespace mirror
