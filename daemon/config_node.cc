// The [[node]] tables of a volume file (docs/configuration.md, "[[node]]
// (exactly two)"): each node's endpoints and paths, its kernel device, the
// TLS of its NBD exports and of the replication link. Part of Parser
// (config_parser.h).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <tuple>
#include <utility>

#include "config_parser.h"
#include "kernel_nbd.h"
#include "listen_addr.h"

namespace mirror::config_detail {

namespace {

constexpr size_t kMaxNodeNameBytes = 64;  // the metadata file's name fields

// ListenAddr::parse takes any host text. A volume file gets a stricter check,
// so that a typo does not become a name lookup at start-up and an IPv6
// address without brackets cannot silently lose its last group to the port.
// Returns what is wrong, or an empty string.
std::string host_problem(const ListenAddr& a, std::string_view text) {
  if (a.kind != ListenAddr::Kind::kTcp) return {};
  if (text.starts_with("[")) {
    size_t pct = a.host.find('%');  // a zone, as in [fe80::1%eth0]
    std::string addr = a.host.substr(0, pct);
    in6_addr v6{};
    if (::inet_pton(AF_INET6, addr.c_str(), &v6) != 1 ||
        (pct != std::string::npos && !valid_name(a.host.substr(pct + 1), 64, true)))
      return quote(a.host) + " is not an IPv6 address";
    return {};
  }
  if (a.host.find(':') != std::string::npos)
    return "write an IPv6 address in brackets, \"[ADDR]:PORT\"";
  if (!valid_name(a.host, 253, false)) return quote(a.host) + " is not a host name or IP address";
  return {};
}

// True when a TCP listener on `a` can only be reached from this host: an
// address in 127.0.0.0/8, ::1 (also IPv4-mapped) or the name "localhost". Any
// other name is not resolved here and counts as remote.
bool loopback_only(const ListenAddr& a) {
  if (a.kind != ListenAddr::Kind::kTcp) return true;
  std::string host = a.host.substr(0, a.host.find('%'));
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  return iequals(host, "localhost");
}

}  // namespace

Status Parser::parse_nodes(const toml::table& root, VolumeConfig* cfg) const {
  const toml::node* n = root.get("node");
  if (n == nullptr)
    return fail("node", "missing: a volume needs two [[node]] tables, one for each host");
  const auto* arr = n->as_array();
  if (arr == nullptr)
    return fail("node", std::string("must be an array of tables written [[node]], not ") +
                            std::string(type_name(*n)) +
                            (n->is_table() ? " ([node] or [node.NAME])" : ""));
  if (arr->size() != 2)
    return fail("node", "found " + std::to_string(arr->size()) +
                            " [[node]] tables; a volume has exactly 2");
  for (size_t i = 0; i < arr->size(); ++i) {
    std::string prefix = "node[" + std::to_string(i + 1) + "]";
    const auto* t = arr->get(i)->as_table();
    if (t == nullptr) return wrong_type(prefix, *arr->get(i), "a table");
    NodeConfig node;
    if (auto st = parse_node(*t, prefix, *cfg, &node); !st) return st;
    cfg->nodes.push_back(std::move(node));
  }

  const NodeConfig& a = cfg->nodes[0];
  const NodeConfig& b = cfg->nodes[1];
  if (iequals(a.name, b.name)) return fail("node[2].name", quote(b.name) + " is also node[1].name");
  if (iequals(a.address, b.address))
    return fail("node[2].address", quote(b.address) + " is also node[1].address");
  if (cfg->node(cfg->primary) == nullptr)
    return fail("volume.primary", quote(cfg->primary) + " is not a node name (nodes: " +
                                      quote(a.name) + ", " + quote(b.name) + ")");
  return {};
}

Status Parser::parse_node(const toml::table& t, const std::string& prefix, const VolumeConfig& cfg,
                          NodeConfig* node) const {
  if (auto st = check_keys(
          t, prefix,
          {"name", "address", "backing", "metadata", "nbd-listen", "nbd-allow-remote", "control",
           "device", "device-connections", "device-timeout", "dead-connection-timeout", "tls-cert",
           "tls-key", "nbd-tls", "nbd-tls-cert", "nbd-tls-key", "nbd-tls-ca"});
      !st)
    return st;
  auto required = [&](std::string_view k, std::string_view example) -> Result<const toml::node*> {
    const toml::node* n = t.get(k);
    if (n == nullptr)
      return fail(key(prefix, k), "missing (required), e.g. " + std::string(example));
    return n;
  };

  auto n = required("name", "name = \"alpha\" (this host's name)");
  if (!n) return n.error();
  auto name = get_string(**n, key(prefix, "name"));
  if (!name) return name.error();
  if (!valid_name(*name, kMaxNodeNameBytes, false))
    return fail(key(prefix, "name"),
                quote(*name) +
                    " is not a node name: 1 to 64 letters, digits, '-', '_' or '.', "
                    "starting with a letter or digit");
  node->name = std::move(*name);

  n = required("address", "address = \"10.0.0.1:7788\"");
  if (!n) return n.error();
  auto address = get_string(**n, key(prefix, "address"));
  if (!address) return address.error();
  auto la = ListenAddr::parse(*address);
  if (!la) return fail(key(prefix, "address"), quote(*address) + " is not HOST:PORT");
  if (la->kind != ListenAddr::Kind::kTcp)
    return fail(key(prefix, "address"),
                quote(*address) + " is not HOST:PORT: replication runs over TCP");
  if (la->port == 0)
    return fail(key(prefix, "address"),
                quote(*address) + " is not HOST:PORT: port 0 cannot be dialled");
  if (auto why = host_problem(*la, *address); !why.empty())
    return fail(key(prefix, "address"), quote(*address) + " is not HOST:PORT: " + why);
  node->address = la->to_string();

  n = required("backing", "backing = \"/dev/vg0/NAME\"");
  if (!n) return n.error();
  auto backing = get_path(**n, key(prefix, "backing"));
  if (!backing) return backing.error();
  node->backing = std::move(*backing);

  n = required("metadata", "metadata = \"/var/lib/mirrord/NAME.meta\"");
  if (!n) return n.error();
  auto metadata = get_path(**n, key(prefix, "metadata"));
  if (!metadata) return metadata.error();
  if (*metadata == node->backing)
    return fail(key(prefix, "metadata"), quote(*metadata) + " is also the backing device");
  node->metadata = std::move(*metadata);

  node->control = "/run/mirrord/" + cfg.name + ".ctl";
  if (const auto* c = t.get("control")) {
    auto control = get_path(*c, key(prefix, "control"));
    if (!control) return control.error();
    node->control = std::move(*control);
  }
  if (node->control.size() >= sizeof(sockaddr_un::sun_path))
    return fail(key(prefix, "control"),
                quote(node->control) + " is too long for a socket path (max 107)");

  if (const auto* n = t.get("nbd-allow-remote")) {
    const auto* b = n->as_boolean();
    const auto* s = n->as_string();
    if (s != nullptr && s->get() == "tls") {
      node->nbd_allow_remote = node->nbd_remote_needs_tls = true;
    } else if (b == nullptr) {
      return wrong_type(key(prefix, "nbd-allow-remote"), *n, "true, false or \"tls\"");
    } else {
      node->nbd_allow_remote = b->get();
    }
  }

  if (const auto* l = t.get("nbd-listen")) {
    const auto* arr = l->as_array();
    if (arr == nullptr) return wrong_type(key(prefix, "nbd-listen"), *l, "an array of strings");
    for (size_t i = 0; i < arr->size(); ++i) {
      std::string k = key(prefix, "nbd-listen") + "[" + std::to_string(i + 1) + "]";
      auto s = get_string(*arr->get(i), k);
      if (!s) return s.error();
      auto a = ListenAddr::parse(*s);
      if (!a) return fail(k, quote(*s) + " is not HOST:PORT or unix:PATH");
      if (auto why = host_problem(*a, *s); !why.empty())
        return fail(k, quote(*s) + " is not HOST:PORT or unix:PATH: " + why);
      if (a->kind == ListenAddr::Kind::kUnix && !a->path.starts_with("/"))
        return fail(k, quote(*s) + ": the socket path must be absolute");
      if (a->kind == ListenAddr::Kind::kUnix && a->path == node->control)
        return fail(k, quote(*s) + " is also the control socket");
      if (std::find(node->nbd_listen.begin(), node->nbd_listen.end(), a->to_string()) !=
          node->nbd_listen.end())
        return fail(k, quote(*s) + " is listed twice");
      // NBD has no authentication: whoever reaches the port owns the volume.
      if (!node->nbd_allow_remote && !loopback_only(*a))
        return fail(k, quote(*s) +
                           " is not a loopback address, and NBD clients are not authenticated: "
                           "anyone who can reach it could read and overwrite the volume; listen "
                           "on 127.0.0.1, [::1] or a unix: socket, or set nbd-allow-remote = "
                           "true in this [[node]] table (or \"tls\", with nbd-tls = \"require\")");
      node->nbd_listen.push_back(a->to_string());
    }
  } else {
    node->nbd_listen.push_back("unix:/run/mirrord/" + cfg.name + ".nbd");
    if (node->nbd_listen.back() == "unix:" + node->control)
      return fail(key(prefix, "control"),
                  quote(node->control) + " is also the default nbd-listen socket");
  }
  if (auto st = parse_device(t, prefix, &node->device); !st) return st;
  if (auto st = parse_node_nbd_tls(t, prefix, node); !st) return st;
  return parse_node_tls(t, prefix, cfg, node);
}

Status Parser::parse_device(const toml::table& t, const std::string& prefix,
                            DeviceConfig* dev) const {
  auto path = optional_string(t, prefix, "device");
  if (!path) return path.error();
  if (*path) {
    if (auto idx = knbd::parse_device(**path); !idx)
      return fail(key(prefix, "device"), idx.error().message);
    dev->path = std::move(**path);
  }
  if (const auto* n = t.get("device-connections")) {
    const auto* i = n->as_integer();
    if (i == nullptr) return wrong_type(key(prefix, "device-connections"), *n, "an integer");
    if (i->get() < 1 || i->get() > int64_t(kMaxDeviceConnections))
      return fail(key(prefix, "device-connections"),
                  std::to_string(i->get()) + " is out of range (1 to 16)");
    dev->connections = uint32_t(i->get());
  }
  // The kernel counts both timeouts in whole seconds.
  for (auto [k, out] : {std::pair{"device-timeout", &dev->timeout_s},
                        std::pair{"dead-connection-timeout", &dev->dead_conn_timeout_s}}) {
    const auto* n = t.get(k);
    if (n == nullptr) continue;
    const auto* s = n->as_string();
    if (s == nullptr) return wrong_type(key(prefix, k), *n, "a duration string like \"30s\"");
    auto ms = parse_duration_ms(s->get());
    if (!ms) return fail(key(prefix, k), ms.error().message);
    if (*ms % 1000 != 0 || *ms == 0 || *ms / 1000 > kMaxDeviceTimeoutS)
      return fail(key(prefix, k), quote(s->get()) + " must be whole seconds from 1s to 1h");
    *out = *ms / 1000;
  }
  if (dev->path.empty() &&
      (t.get("device-connections") || t.get("device-timeout") || t.get("dead-connection-timeout")))
    return fail(key(prefix, "device"),
                "missing: the device-* keys need device = \"/dev/nbdN\" or \"auto\"");
  return {};
}

// TLS on the node's NBD exports: a mode, and the files it needs.
Status Parser::parse_node_nbd_tls(const toml::table& t, const std::string& prefix,
                                  NodeConfig* node) const {
  auto mode = optional_string(t, prefix, "nbd-tls");
  if (!mode) return mode.error();
  if (*mode && !nbd::parse_tls_mode(**mode, &node->nbd_tls))
    return fail(key(prefix, "nbd-tls"),
                quote(**mode) + " is not \"off\", \"optional\" or \"require\"");
  for (auto [k, dst] :
       {std::pair{"nbd-tls-cert", &node->nbd_tls_cert},
        std::pair{"nbd-tls-key", &node->nbd_tls_key}, std::pair{"nbd-tls-ca", &node->nbd_tls_ca}}) {
    if (const auto* n = t.get(k)) {
      auto path = get_path(*n, key(prefix, k));
      if (!path) return path.error();
      *dst = std::move(*path);
      if (node->nbd_tls == nbd::TlsMode::kOff)
        return fail(key(prefix, k),
                    "set, but nbd-tls is off: the exports would run in plaintext; set "
                    "nbd-tls = \"require\" (or \"optional\") in this [[node]] table");
    }
  }
  if (node->nbd_tls != nbd::TlsMode::kOff) {
    if (node->nbd_tls_cert.empty())
      return fail(key(prefix, "nbd-tls-cert"),
                  "missing: nbd-tls = \"" + std::string(nbd::to_string(node->nbd_tls)) +
                      "\" needs the certificate the exports present, e.g. nbd-tls-cert = "
                      "\"/etc/mirrord/nbd-cert.pem\"");
    if (node->nbd_tls_key.empty())
      return fail(key(prefix, "nbd-tls-key"), "missing: nbd-tls = \"" +
                                                  std::string(nbd::to_string(node->nbd_tls)) +
                                                  "\" needs the private key of nbd-tls-cert");
  }
  if (node->nbd_remote_needs_tls && node->nbd_tls != nbd::TlsMode::kRequire)
    return fail(key(prefix, "nbd-tls"),
                "must be \"require\": nbd-allow-remote = \"tls\" allows remote "
                "NBD listeners only when every client must use TLS");
  return {};
}

// Each node's certificate and key: its own tls-cert/tls-key, else the
// volume's (one path that holds a different file on each host).
Status Parser::parse_node_tls(const toml::table& t, const std::string& prefix,
                              const VolumeConfig& cfg, NodeConfig* node) const {
  for (auto [k, dst, dflt] : {std::tuple{"tls-cert", &node->tls_cert, &cfg.tls_cert},
                              std::tuple{"tls-key", &node->tls_key, &cfg.tls_key}}) {
    const std::string at = key(prefix, k);
    if (const auto* n = t.get(k)) {
      auto path = get_path(*n, at);
      if (!path) return path.error();
      *dst = std::move(*path);
    } else {
      *dst = *dflt;
    }
    if (!cfg.tls && !dst->empty())
      return fail(t.get(k) ? at : key("volume", k),
                  "set, but volume.tls is not true: the link would run in plaintext; set "
                  "tls = true in [volume] (or remove the tls keys)");
    if (cfg.tls && dst->empty())
      return fail(at, "missing: tls = true needs this node's " +
                          std::string(dst == &node->tls_cert ? "certificate" : "private key") +
                          "; set " + k + " in this [[node]] table or in [volume]");
  }
  return {};
}

}  // namespace mirror::config_detail
