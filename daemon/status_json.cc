#include "status_json.h"

#include <cstdio>

#include "control_protocol.h"

namespace mirror {

nlohmann::json status_to_json(const VolumeStatus& st, const DeviceStatus* device) {
  char gen[20];
  std::snprintf(gen, sizeof gen, "%016llx", static_cast<unsigned long long>(st.generation));
  nlohmann::json j = {
      {"schema", control::kStatusSchema},
      {"volume", st.volume},
      {"node", st.node},
      {"peer", st.peer},
      {"role", st.role == Role::kPrimary ? "primary" : "secondary"},
      {"link", st.link},
      {"state", st.state},
      {"consistent", st.consistent},
      {"copy_history_unknown", st.copy_history_unknown},
      {"size", st.size},
      {"out_of_sync_bytes", st.dirty_bytes},
      {"resync",
       {{"running", st.resync.running},
        {"total_bytes", st.resync.total_bytes},
        {"done_bytes", st.resync.done_bytes},
        {"same_bytes", st.resync.same_bytes},
        {"rate_bytes_per_sec", st.resync.rate_bps},
        {"eta_seconds", st.resync.eta_seconds}}},
      {"resynced_bytes_total", st.resynced_bytes_total},
      {"resync_same_bytes_total", st.resync_same_bytes_total},
      {"last_error", st.last_error},
      {"local_io_errors", st.local_io_errors},
      {"reads_from_peer", st.reads_from_peer},
      {"read_repairs", st.read_repairs},
      {"disk", st.disk},
      {"peer_disk_failed", st.peer_disk_failed},
      {"trim", st.trim},
      {"generation", gen},
      {"holding_writes", st.holding},
      {"peer_role", st.peer_role.empty() ? nlohmann::json(nullptr) : nlohmann::json(st.peer_role)},
      {"demoting", st.demoting},
      {"discarding", st.discarding},
      {"writable", (st.role == Role::kPrimary && !st.copy_history_unknown) || st.writable},
      {"nbd",
       {{"tls", nbd::to_string(st.nbd_tls)},
        {"client_certificates", st.nbd_tls_client_certs}}},
  };
  if (st.role == Role::kSecondary) {
    j["backup"] = {{"point", st.backup_point}, {"changed_bytes", st.changed_since_backup}};
  } else {
    j["backup"] = nullptr;
  }
  if (!st.link_up) {
    j["link_security"] = nullptr;
  } else if (st.link_tls) {
    // Both ends proved their name twice: a certificate from the volume's CA
    // (TLS) and the shared secret (HMAC, inside the TLS session).
    j["link_security"] = {{"encrypted", true},
                          {"protocol", st.tls.protocol},
                          {"cipher", st.tls.cipher},
                          {"peer_certificate", st.tls.peer_subject},
                          {"authentication", "certificate+hmac"}};
  } else {
    j["link_security"] = {{"encrypted", false},
                          {"protocol", nullptr},
                          {"cipher", nullptr},
                          {"peer_certificate", nullptr},
                          {"authentication", "hmac"}};
  }
  if (st.verify.run) {
    const VerifyProgress& v = st.verify;
    j["verify"] = {{"run", v.run},
                   {"running", v.running},
                   {"result", v.result},
                   {"offset", v.offset},
                   {"total_bytes", v.total_bytes},
                   {"done_bytes", v.done_bytes},
                   {"rate_bytes_per_sec", v.rate_bps},
                   {"out_of_sync_bytes", v.out_of_sync_bytes},
                   {"out_of_sync_regions", v.out_of_sync_regions},
                   {"repaired_bytes", v.repaired_bytes},
                   {"unreadable_bytes", v.unreadable_bytes},
                   {"peer_unreadable_bytes", v.peer_unreadable_bytes},
                   {"started_unix_ms", v.started_unix_ms},
                   {"finished_unix_ms", v.finished_unix_ms}};
  } else {
    j["verify"] = nullptr;
  }
  auto handler = [](const HandlerStatus& h) -> nlohmann::json {
    if (h.program.empty()) return nullptr;
    return {{"program", h.program},
            {"runs", h.runs},
            {"running", h.running},
            {"last_result", h.last_result.empty() ? nlohmann::json(nullptr)
                                                  : nlohmann::json(h.last_result)},
            {"last_unix_ms", h.last_unix_ms}};
  };
  j["handlers"] = {{"before_resync_target", handler(st.before_resync_target)},
                   {"after_resync_target", handler(st.after_resync_target)}};
  if (st.split_unix_ms) {
    j["last_split"] = {{"unix_ms", st.split_unix_ms}, {"drain_us", st.split_drain_us}};
  } else {
    j["last_split"] = nullptr;
  }
  if (device) {
    j["device"] = {{"path", device->path},
                   {"api", device->api},
                   {"connections", device->connections},
                   {"state", device->state},
                   {"read_only", device->read_only},
                   {"reattached", device->reattached},
                   {"link_dead_events", device->link_dead_events}};
  } else {
    j["device"] = nullptr;
  }
  return j;
}

}  // namespace mirror
