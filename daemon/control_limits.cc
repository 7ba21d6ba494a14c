#include "control_limits.h"

namespace mirror::control {

Admission admit(const std::vector<ConnectionView>& conns, uid_t uid, const ClientLimits& l) {
  Admission a;
  if (uid == 0) {
    if (conns.size() < l.total) return a;
    // Full: make room at the expense of an idle non-root connection. With
    // none, root is admitted past the total anyway (its own connections are
    // the only ones that can fill it then).
    for (size_t i = 0; i < conns.size(); ++i) {
      if (conns[i].uid != 0 && conns[i].idle) {
        a.evict = i;
        break;
      }
    }
    return a;
  }
  size_t same_uid = 0, non_root = 0;
  for (const auto& c : conns) {
    if (c.uid == 0) continue;
    ++non_root;
    if (c.uid == uid) ++same_uid;
  }
  a.admit = false;
  if (same_uid >= l.per_uid) {
    a.reason = "too many control connections from uid " + std::to_string(uid) + " (limit " +
               std::to_string(l.per_uid) + " per user)";
  } else if (non_root >= l.non_root_total || conns.size() >= l.total) {
    a.reason = "too many control connections (limit " + std::to_string(l.non_root_total) +
               " from users other than root)";
  } else {
    a.admit = true;
  }
  return a;
}

bool LogRateLimit::allow(uint32_t key, uint64_t now_ms, uint64_t* suppressed) {
  // Forget keys quiet for a whole interval (they would be logged anyway):
  // the map stays as small as the set of uids refused within one interval.
  if (entries_.size() > 256) {
    std::erase_if(entries_, [&](const auto& kv) {
      return now_ms - kv.second.last_ms >= interval_ms_ && kv.second.suppressed == 0;
    });
  }
  auto [it, fresh] = entries_.try_emplace(key);
  Entry& e = it->second;
  if (!fresh && now_ms - e.last_ms < interval_ms_) {
    ++e.suppressed;
    return false;
  }
  *suppressed = e.suppressed;
  e.suppressed = 0;
  e.last_ms = now_ms;
  return true;
}

}  // namespace mirror::control
