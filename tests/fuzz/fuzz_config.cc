// libFuzzer target for the volume configuration parser (daemon/config.h).
//
// The input is the text of a volume file. parse_volume_config must return
// (never throw, crash or hang) and:
//  - on error, the message starts with the file name;
//  - on success, every documented invariant holds (docs/configuration.md),
//    and the parsed values, written back out as TOML, parse to the same
//    configuration (so normalised values such as addresses are stable).
// Any violation aborts.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "config.h"

namespace {

using mirror::VolumeConfig;

const std::string kFile = "fuzz.toml";

[[noreturn]] void fail(const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "fuzz-config: %s %s\n", what, detail.c_str());
  std::abort();
}

// A TOML basic string, ASCII only: values came from TOML strings, so they
// are UTF-8; every non-ASCII code point is written as a \u or \U escape
// (the parser refuses some of them written raw).
std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    char buf[16];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
      ++i;
    } else if (c < 0x20 || c == 0x7f) {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      ++i;
    } else if (c < 0x80) {
      out += char(c);
      ++i;
    } else {
      size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      uint32_t cp = c & (0x7F >> n);
      for (size_t k = 1; k < n && i + k < s.size(); ++k)
        cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
      std::snprintf(buf, sizeof buf, cp > 0xFFFF ? "\\U%08x" : "\\u%04x", unsigned(cp));
      out += buf;
      i += n;
    }
  }
  return out + "\"";
}

std::string render(const VolumeConfig& c) {
  auto num = [](uint64_t v) { return toml_string(std::to_string(v)); };
  std::string t = "[volume]\n";
  t += "name = " + toml_string(c.name) + "\n";
  t += "size = " + num(c.size) + "\n";
  t += "secret = " + toml_string(c.secret) + "\n";
  t += "ack-timeout = " + toml_string(std::to_string(c.ack_timeout_ms) + "ms") + "\n";
  t += "bitmap-granularity = " + num(c.granularity) + "\n";
  t += "activity-extent = " + num(c.al_extent) + "\n";
  t += "on-peer-loss = " + toml_string(mirror::to_string(c.on_peer_loss)) + "\n";
  t += "resync-rate = " + num(c.resync_rate) + "\n";
  t += "resync-max-inflight = " + std::to_string(c.resync_max_inflight) + "\n";
  t += "initial-sync = " + toml_string(mirror::to_string(c.initial_sync)) + "\n";
  t += "primary = " + toml_string(c.primary) + "\n";
  if (!c.control_group.empty()) t += "control-group = " + toml_string(c.control_group) + "\n";
  if (c.tls) {
    t += "tls = true\ntls-ca = " + toml_string(c.tls_ca) + "\n";
    if (!c.tls_cert.empty()) t += "tls-cert = " + toml_string(c.tls_cert) + "\n";
    if (!c.tls_key.empty()) t += "tls-key = " + toml_string(c.tls_key) + "\n";
  }
  for (const auto& n : c.nodes) {
    t += "[[node]]\nname = " + toml_string(n.name) + "\naddress = " + toml_string(n.address) +
         "\nbacking = " + toml_string(n.backing) + "\nmetadata = " + toml_string(n.metadata) +
         "\ncontrol = " + toml_string(n.control) + "\nnbd-listen = [";
    for (const auto& l : n.nbd_listen) t += toml_string(l) + ",";
    t += "]\n";
    if (n.nbd_allow_remote)
      t += n.nbd_remote_needs_tls ? "nbd-allow-remote = \"tls\"\n" : "nbd-allow-remote = true\n";
    if (n.nbd_tls != mirror::nbd::TlsMode::kOff) {
      t += "nbd-tls = " + toml_string(std::string(mirror::nbd::to_string(n.nbd_tls))) + "\n";
      t += "nbd-tls-cert = " + toml_string(n.nbd_tls_cert) + "\n";
      t += "nbd-tls-key = " + toml_string(n.nbd_tls_key) + "\n";
      if (!n.nbd_tls_ca.empty()) t += "nbd-tls-ca = " + toml_string(n.nbd_tls_ca) + "\n";
    }
    if (!n.device.path.empty()) {
      t += "device = " + toml_string(n.device.path) + "\n";
      t += "device-connections = " + std::to_string(n.device.connections) + "\n";
      t += "device-timeout = " + toml_string(std::to_string(n.device.timeout_s) + "s") + "\n";
      t += "dead-connection-timeout = " +
           toml_string(std::to_string(n.device.dead_conn_timeout_s) + "s") + "\n";
    }
    if (c.tls && !n.tls_cert.empty()) t += "tls-cert = " + toml_string(n.tls_cert) + "\n";
    if (c.tls && !n.tls_key.empty()) t += "tls-key = " + toml_string(n.tls_key) + "\n";
  }
  return t;
}

bool same(const VolumeConfig& a, const VolumeConfig& b) {
  if (a.name != b.name || a.size != b.size || a.secret != b.secret ||
      a.ack_timeout_ms != b.ack_timeout_ms || a.granularity != b.granularity ||
      a.al_extent != b.al_extent || a.on_peer_loss != b.on_peer_loss ||
      a.resync_rate != b.resync_rate || a.resync_max_inflight != b.resync_max_inflight ||
      a.initial_sync != b.initial_sync || a.primary != b.primary ||
      a.control_group != b.control_group || a.tls != b.tls || a.tls_ca != b.tls_ca ||
      a.nodes.size() != b.nodes.size())
    return false;
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    const auto &x = a.nodes[i], &y = b.nodes[i];
    if (x.name != y.name || x.address != y.address || x.backing != y.backing ||
        x.metadata != y.metadata || x.control != y.control || x.nbd_listen != y.nbd_listen ||
        x.nbd_allow_remote != y.nbd_allow_remote || x.device.path != y.device.path ||
        x.device.connections != y.device.connections || x.device.timeout_s != y.device.timeout_s ||
        x.device.dead_conn_timeout_s != y.device.dead_conn_timeout_s ||
        x.tls_cert != y.tls_cert || x.tls_key != y.tls_key ||
        x.nbd_remote_needs_tls != y.nbd_remote_needs_tls || x.nbd_tls != y.nbd_tls ||
        x.nbd_tls_cert != y.nbd_tls_cert || x.nbd_tls_key != y.nbd_tls_key ||
        x.nbd_tls_ca != y.nbd_tls_ca)
      return false;
  }
  return true;
}

bool pow2(uint64_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}

void check_invariants(const VolumeConfig& c) {
  if (c.file != kFile) fail("file not recorded");
  if (c.name.empty() || c.name.size() > 64) fail("bad name length");
  if (c.size == 0 || c.size % mirror::kVolumeSizeAlign != 0 || c.size > uint64_t(INT64_MAX))
    fail("bad size", std::to_string(c.size));
  if (c.secret.size() < mirror::kMinSecretBytes || c.secret.size() > mirror::kMaxSecretBytes)
    fail("bad secret length");
  if (c.ack_timeout_ms == 0 || c.ack_timeout_ms > mirror::kMaxAckTimeoutMs) fail("bad ack timeout");
  if (!pow2(c.granularity) || c.granularity < mirror::kMinGranularity ||
      c.granularity > mirror::kMaxGranularity)
    fail("bad granularity");
  if (!pow2(c.al_extent) || c.al_extent < c.granularity || c.al_extent > mirror::kMaxAlExtent)
    fail("bad al extent");
  if (c.resync_rate != 0 && c.resync_rate < c.granularity) fail("bad resync rate");
  if (c.resync_max_inflight < 1 || c.resync_max_inflight > mirror::kMaxResyncInflight)
    fail("bad inflight");
  if (c.nodes.size() != 2) fail("not two nodes");
  if (c.nodes[0].name == c.nodes[1].name || c.nodes[0].address == c.nodes[1].address)
    fail("nodes not distinct");
  if (c.node(c.primary) == nullptr) fail("primary is not a node");
  for (const auto& n : c.nodes) {
    if (c.peer_of(n.name) == nullptr || c.peer_of(n.name) == &n) fail("peer_of");
    if (n.backing.empty() || n.backing[0] != '/' || n.metadata.empty() || n.metadata[0] != '/' ||
        n.control.empty() || n.control[0] != '/')
      fail("relative path");
    if (n.backing == n.metadata) fail("metadata is the backing device");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = mirror::parse_volume_config(text, kFile);
  if (!r.ok()) {
    if (r.error().message.rfind(kFile, 0) != 0) fail("error without the file name");
    return 0;
  }
  check_invariants(*r);
  std::string again = render(*r);
  auto r2 = mirror::parse_volume_config(again, kFile);
  if (!r2.ok()) fail("rendered config does not parse:", r2.error().message + "\n" + again);
  if (!same(*r, *r2)) fail("rendered config parses differently:", again);
  return 0;
}
