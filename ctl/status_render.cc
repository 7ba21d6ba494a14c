#include "status_render.h"

#include <cstdio>
#include <ctime>
#include <sstream>

namespace mirror {

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

namespace {
std::string local_time(uint64_t unix_ms) {
  time_t t = time_t(unix_ms / 1000);
  char when[64];
  tm lt;
  localtime_r(&t, &lt);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &lt);
  return when;
}
}  // namespace

std::string render_status(const nlohmann::json& s, bool bar) {
  std::ostringstream o;
  auto row = [&](const char* k, const std::string& v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "  %-16s ", k);
    o << buf << v << "\n";
  };
  o << "volume " << s.value("volume", "?") << " on " << s.value("node", "?") << " ("
    << s.value("role", "?") << ")\n";
  row("peer", s.value("peer", "?") + " (" + s.value("link", "?") + ")");
  if (s.contains("link_security") && s["link_security"].is_object()) {
    const auto& l = s["link_security"];
    if (l.value("encrypted", false)) {
      row("link security", l.value("protocol", "?") + " " + l.value("cipher", "?") + ", peer " +
                               l.value("peer_certificate", "?") +
                               "; authenticated by certificate and shared secret");
    } else {
      row("link security", "NOT encrypted (tls = false); authenticated by the shared secret only");
    }
  }
  row("state", s.value("state", "?") +
                   (s.value("consistent", true)                ? ""
                    : s.value("copy_history_unknown", false) ? ", this copy's history is UNKNOWN"
                                                               : ", this copy is INCONSISTENT"));
  if (s.value("copy_history_unknown", false))
    row("warning", "nothing records this copy's history (its metadata is new or was lost, over "
                   "a disk that holds data): older or newer than the peer's is unknown (after a "
                   "failover it may be stale, or the only current one); check before trusting "
                   "it (docs/bitmap-format.md, kFlagCopyUnknown)");
  row("size", human_bytes(s.value("size", uint64_t(0))));
  row("out of sync", human_bytes(s.value("out_of_sync_bytes", uint64_t(0))));
  const auto& r = s.contains("resync") ? s["resync"] : nlohmann::json::object();
  if (r.value("running", false)) {
    uint64_t total = r.value("total_bytes", uint64_t(0)), done = r.value("done_bytes", uint64_t(0));
    double pct = total ? 100.0 * double(done) / double(total) : 0;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%.1f%% of %s, %s/s, ETA %llus", pct,
                  human_bytes(total).c_str(),
                  human_bytes(r.value("rate_bytes_per_sec", uint64_t(0))).c_str(),
                  static_cast<unsigned long long>(r.value("eta_seconds", uint64_t(0))));
    row("resync", buf);
    if (uint64_t same = r.value("same_bytes", uint64_t(0)))
      row("", human_bytes(same) + " identical on the peer so far (not sent)");
    if (bar) {
      int width = 40, fill = int(pct / 100 * width);
      o << "  [" << std::string(fill, '#') << std::string(width - fill, '.') << "]\n";
    }
  }
  if (uint64_t same = s.value("resync_same_bytes_total", uint64_t(0))) {
    row("resync checksums", human_bytes(same) + " of " +
                                human_bytes(s.value("resynced_bytes_total", uint64_t(0))) +
                                " resynced since start was identical on the peer (not sent)");
  }
  if (s.contains("verify") && s["verify"].is_object()) {
    const auto& v = s["verify"];
    uint64_t total = v.value("total_bytes", uint64_t(0)), done = v.value("done_bytes", uint64_t(0));
    uint64_t bytes = v.value("out_of_sync_bytes", uint64_t(0));
    uint64_t regions = v.value("out_of_sync_regions", uint64_t(0));
    std::string found = human_bytes(bytes) + " out of sync in " + std::to_string(regions) +
                        " region" + (regions == 1 ? "" : "s") +
                        (regions ? " (resynced from the primary)" : "");
    // Read errors the run met (verify is a scrub too).
    if (uint64_t n = v.value("repaired_bytes", uint64_t(0)))
      found += "; " + human_bytes(n) + " unreadable here, rewritten from the peer's copy";
    if (uint64_t n = v.value("peer_unreadable_bytes", uint64_t(0)))
      found += "; " + human_bytes(n) + " unreadable on the peer, resynced there";
    if (uint64_t n = v.value("unreadable_bytes", uint64_t(0)))
      found += "; " + human_bytes(n) + " unreadable here and not repaired (not compared)";
    if (v.value("running", false)) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%.1f%% of %s, %s/s, ",
                    total ? 100.0 * double(done) / double(total) : 0.0, human_bytes(total).c_str(),
                    human_bytes(v.value("rate_bytes_per_sec", uint64_t(0))).c_str());
      row("verify", std::string(buf) + found);
    } else {
      row("last verify", v.value("result", std::string("?")) + " " +
                             local_time(v.value("finished_unix_ms", uint64_t(0))) + ": " +
                             human_bytes(done) + " of " + human_bytes(total) + " compared, " +
                             found);
    }
  }
  if (s.contains("last_split") && !s["last_split"].is_null()) {
    const auto& l = s["last_split"];
    row("last split", local_time(l.value("unix_ms", uint64_t(0))) +
                          " (in-flight writes drained in " +
                          std::to_string(l.value("drain_us", uint64_t(0))) + " us)");
  }
  if (s.contains("device") && s["device"].is_object()) {
    const auto& d = s["device"];
    std::string v = d.value("path", "?") + " (" + d.value("state", "?") + ", " +
                    std::to_string(d.value("connections", 0)) + " connection" +
                    (d.value("connections", 0) == 1 ? "" : "s") + ", " + d.value("api", "?") +
                    (d.value("read_only", false) ? ", read-only" : "") +
                    (d.value("reattached", false) ? ", re-attached after a restart" : "") + ")";
    row("device", v);
  }
  if (s.value("role", "") == "secondary" && s.value("writable", false))
    row("export", "read-write (open-rw): changes are undone at rejoin");
  if (s.contains("backup") && s["backup"].is_object()) {
    const auto& b = s["backup"];
    uint64_t point = b.value("point", uint64_t(0));
    row("since backup", human_bytes(b.value("changed_bytes", uint64_t(0))) + " changed" +
                            (point ? " (backup point " + std::to_string(point) + ")"
                                   : " (no backup point yet)"));
  }
  const std::string disk = s.value("disk", std::string("ok"));
  if (disk == "diskless")
    row("disk", "FAILED and detached (diskless): every read and write is served by " +
                    s.value("peer", std::string("the peer")) +
                    "'s copy, the only current one; see `mirrorctl promote` on the peer and "
                    "--discard-my-data here");
  else if (disk == "detaching")
    row("disk", "FAILED: detaching it (recording on both nodes that the peer's copy is the "
                "only current one)");
  if (s.value("peer_disk_failed", false))
    row("peer disk", "FAILED: the primary detached its disk; this copy is the only current one "
                     "(promote needs no --force)");
  if (uint64_t n = s.value("local_io_errors", uint64_t(0)))
    row("disk errors", std::to_string(n) + " failed request" + (n == 1 ? "" : "s") +
                           " on this node's disk since start");
  if (uint64_t n = s.value("reads_from_peer", uint64_t(0))) {
    uint64_t fixed = s.value("read_repairs", uint64_t(0));
    row("read errors", std::to_string(n) + " read" + (n == 1 ? "" : "s") +
                           " this disk failed answered by the peer's copy; " +
                           std::to_string(fixed) + " rewritten here");
  }
  const std::string trim = s.value("trim", std::string("applied"));
  if (trim == "local-store-cannot-punch")
    row("trim", "not applied: this node's backing store cannot punch holes");
  else if (trim == "peer-store-cannot-punch")
    row("trim", "not applied: the peer's backing store cannot punch holes (it would change one "
                "copy only)");
  if (s.contains("handlers") && s["handlers"].is_object()) {
    for (const char* key : {"before_resync_target", "after_resync_target"}) {
      const auto& h = s["handlers"].value(key, nlohmann::json());
      if (!h.is_object()) continue;
      uint64_t runs = h.value("runs", uint64_t(0));
      std::string v = h.value("program", std::string("?")) + ": ";
      if (h.value("running", false))
        v += "running";
      else if (runs == 0)
        v += "not run yet";
      else
        v += "last run " + (h["last_result"].is_string() ? h["last_result"].get<std::string>()
                                                         : std::string("?"));
      v += " (" + std::to_string(runs) + " run" + (runs == 1 ? "" : "s") + " since start)";
      row(key[0] == 'b' ? "before resync" : "after resync", v);
    }
  }
  if (!s.value("last_error", std::string()).empty()) row("last error", s["last_error"]);
  if (s.value("state", std::string()) == "split-brain")
    row("to resolve", "nothing was overwritten; choose the survivor: on the other node (whose "
                      "changes are lost) run `mirrorctl discard-my-data`");
  return o.str();
}

}  // namespace mirror
