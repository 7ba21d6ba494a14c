// Volume configuration: one TOML file per volume, identical on both hosts
// (the role a DRBD resource file plays). The schema, every key, its default
// and its limits are specified in docs/configuration.md; this header is the
// parsed form.
//
// Everything here is a pure function of its inputs plus the files it names
// (the volume file, a secret-file): no globals, no logging, safe to call from
// any thread. Errors are values; each message names the file, the key as a
// dotted path ("volume.size", "node[2].address"; nodes count from 1 in file
// order) and what is wrong. Secrets never appear in an error message.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "codec.h"
#include "result.h"

namespace mirror {

// What the primary does when the peer stops acknowledging writes.
enum class OnPeerLoss {
  kContinue,  // keep serving, track the unreplicated blocks in the bitmap
  kFailStop,  // hold writes until the peer is back (the copies never diverge)
};

// What the primary does when its own disk fails a write (EIO): DRBD's
// on-io-error.
enum class OnIoError {
  kDetach,  // the peer's copy (in sync) serves every request from then on
  kPassOn,  // the client gets the error; the node keeps its disk
};

// How a new pair brings the secondary in line with the primary.
enum class InitialSync {
  kFull,  // copy every block from the primary
  kSkip,  // the operator asserts both devices are already identical
};

std::string_view to_string(OnPeerLoss v);
std::string_view to_string(InitialSync v);
std::string_view to_string(OnIoError v);

// Attaching the volume to this host's kernel as /dev/nbdX (docs/kernel-attach.md).
struct DeviceConfig {
  std::string path;                    // "/dev/nbdN" or "auto"; empty: do not attach
  uint32_t connections = 1;            // sockets between the kernel and mirrord
  uint32_t timeout_s = 30;             // per request, then the kernel retries it
  uint32_t dead_conn_timeout_s = 120;  // I/O waits this long for a restarted mirrord
};

struct NodeConfig {
  std::string name;                     // the node's host name; matched against gethostname()
  std::string address;                  // replication endpoint, TCP "HOST:PORT" (validated)
  std::string backing;                  // absolute path of the backing file or block device
  std::string metadata;                 // absolute path of the bitmap/metadata file
  std::string control;                  // absolute path of the control socket
  std::vector<std::string> nbd_listen;  // "HOST:PORT", "[V6]:PORT" or "unix:/PATH"
  DeviceConfig device;
  bool nbd_allow_remote = false;        // TCP nbd-listen beyond loopback is allowed
  bool nbd_remote_needs_tls = false;    // nbd-allow-remote = "tls": only with nbd-tls = require
  std::string tls_cert, tls_key;        // with tls: this node's (or the volume's) PEM files
  // NBD_OPT_STARTTLS on this node's exports (docs/nbd-server.md, "TLS").
  nbd::TlsMode nbd_tls = nbd::TlsMode::kOff;
  std::string nbd_tls_cert, nbd_tls_key;  // required unless nbd_tls is off
  std::string nbd_tls_ca;                 // set: clients must present a certificate it signed
};

struct VolumeConfig {
  std::string file;  // where it was loaded from (used as the prefix of errors)
  std::string name;
  uint64_t size = 0;   // bytes; > 0, a multiple of kVolumeSizeAlign
  std::string secret;  // replication shared secret; never log it
  uint32_t ack_timeout_ms = 5000;
  uint32_t granularity = 64 << 10;  // bitmap bytes per bit
  uint32_t al_extent = 4 << 20;     // activity-log extent
  uint32_t al_extents = 1237;       // extents the activity log keeps active (DRBD's al-extents)
  OnPeerLoss on_peer_loss = OnPeerLoss::kContinue;
  OnIoError on_io_error = OnIoError::kDetach;
  uint64_t resync_rate = 0;  // bytes per second; 0 = unlimited
  uint32_t resync_max_inflight = 8;
  // Resync compares digests with the peer first and sends only the regions
  // that differ (DRBD's csums-alg); acted on by the sync source.
  bool resync_checksums = false;
  InitialSync initial_sync = InitialSync::kFull;
  std::string primary;            // the initial primary of a new pair; one of nodes[].name
  std::string control_group;      // empty: only root may change state
  bool tls = false;               // the replication link runs over TLS 1.3
  std::string tls_ca;             // with tls: the CA both nodes' certificates chain to
  std::string tls_cert, tls_key;  // the default for nodes without their own (may be empty)
  // DRBD's handlers: programs (absolute paths) the secondary runs around a
  // resync into its copy (docs/configuration.md, "Handlers"); empty: none.
  std::string before_resync_target, after_resync_target;
  uint32_t handler_timeout_ms = 60000;  // a handler running longer is killed
  std::vector<NodeConfig> nodes;  // exactly 2, in file order

  // Exact (case-sensitive) name match; nullptr if none. Pointers stay valid
  // while this VolumeConfig lives and `nodes` is not modified.
  const NodeConfig* node(std::string_view name) const;
  // The other node of the pair; nullptr if `name` is not a node.
  const NodeConfig* peer_of(std::string_view name) const;
};

// Limits enforced by the parser (documented in docs/configuration.md).
inline constexpr uint64_t kVolumeSizeAlign = 4096;
inline constexpr size_t kMinSecretBytes = 16;
inline constexpr size_t kMaxSecretBytes = 4096;
inline constexpr uint32_t kMinGranularity = 4 << 10;
inline constexpr uint32_t kMaxGranularity = 64 << 20;
inline constexpr uint32_t kMaxAlExtent = 1u << 30;
inline constexpr uint32_t kMaxAckTimeoutMs = 3600 * 1000;
inline constexpr uint32_t kMaxResyncInflight = 1024;
inline constexpr uint32_t kMaxDeviceConnections = 16;
inline constexpr uint32_t kMaxDeviceTimeoutS = 3600;
inline constexpr uint32_t kMaxHandlerTimeoutMs = 3600 * 1000;

// Parses and validates the text of a volume file. `file` names it in errors.
// A secret-file (absolute path required) is read here. The volume file's own
// permissions are not checked: that needs the file, see load_volume_config.
// Never throws.
Result<VolumeConfig> parse_volume_config(std::string_view text, const std::string& file);

// Reads `file`, parses it, and refuses an inline secret in a file that group
// or others can read.
Result<VolumeConfig> load_volume_config(const std::string& file);

// The daemon's check at start (not the parser's: mirrorctl loads the same
// file as a user who may not run them): every handler program exists, is a
// regular file and is executable by this process. The error names the file
// and the key.
Status check_handler_programs(const VolumeConfig& cfg);

// Picks this host's node: the one named by `node_flag` (--node) if not
// empty, else the one whose name equals gethostname() or its short name
// (case-insensitive). The error lists the node names. The pointer points
// into `cfg`.
Result<const NodeConfig*> select_local_node(const VolumeConfig& cfg, const std::string& node_flag);
// As above with the host name given (the seam tests use).
Result<const NodeConfig*> select_local_node(const VolumeConfig& cfg, const std::string& node_flag,
                                            std::string_view hostname);

// "4096", "64K", "10G": digits with an optional binary suffix K, M, G or T
// (either case; 1K = 1024). No spaces, signs or fractions.
Result<uint64_t> parse_size(std::string_view s);
// "5s", "500ms", "2m"/"2min", "1h": digits and a unit (required).
Result<uint32_t> parse_duration_ms(std::string_view s);

}  // namespace mirror
