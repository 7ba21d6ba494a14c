// Application quiescing around a split (US 6,490,598: block the database,
// split the mirror, unblock it):
//
//   1. --pre CMD runs (a database checkpoint, "block writes");
//   2. every --freeze mount point is frozen (FIFREEZE);
//   3. the split happens (the caller's function);
//   4. the filesystems are thawed (FITHAW) and --post CMD runs.
//
// If the pre-hook or a freeze fails, everything already frozen is thawed,
// the post-hook runs anyway, and no split happens. A guard process, forked
// before anything is frozen, thaws and runs the post-hook when the timeout
// expires or when mirrorctl dies, so an application is never left blocked.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace mirror {

struct QuiesceOptions {
  std::vector<std::string> freeze;  // mount points
  std::string pre, post;            // shell commands (sh -c)
  int timeout_s = 30;
};

struct QuiesceResult {
  bool split_attempted = false;
  bool split_made = false;  // the split answered success (ok may still be false: a post-hook)
  bool ok = false;
  std::string message;  // what happened, or why not
};

// `split` returns "" on success or an error message.
QuiesceResult quiesced_split(const QuiesceOptions& opts,
                             const std::function<std::string()>& split);

}  // namespace mirror
