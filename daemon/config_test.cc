#include "config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace mirror {
namespace {

using ::testing::HasSubstr;

constexpr const char* kFile = "/etc/mirrord/db.toml";
constexpr const char* kSecret = "0123456789abcdef-secret";

// A minimal valid file: only the required keys.
const std::string kMinimal = R"(
[volume]
name = "db"
size = "10G"
secret = "0123456789abcdef-secret"
primary = "alpha"

[[node]]
name = "alpha"
address = "10.0.0.1:7788"
backing = "/dev/vg0/db"
metadata = "/var/lib/mirrord/db.meta"

[[node]]
name = "beta"
address = "10.0.0.2:7788"
backing = "/dev/vg1/db"
metadata = "/var/lib/mirrord/db.meta"
)";

// kMinimal with the first `from` replaced by `to` (which must exist).
std::string with(const std::string& from, const std::string& to, std::string text = kMinimal) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "test bug: no '" << from << "' in the base file";
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// A private directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "mirror_config_XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string write(const std::string& name, const std::string& data, mode_t mode) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
    ::chmod(p.c_str(), mode);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string parse_error(const std::string& text) {
  auto r = parse_volume_config(text, kFile);
  EXPECT_FALSE(r.ok()) << "parsed:\n" << text;
  return r.ok() ? std::string() : r.error().message;
}

TEST(Config, FullFile) {
  TempDir dir;
  std::string secret_file = dir.write("db.secret", "s3cret-s3cret-s3cret\n", 0600);
  std::string text = R"(
# every key set
[volume]
name = "db"
size = "1T"
secret-file = ")" + secret_file +
                     R"("
ack-timeout = "750ms"
bitmap-granularity = "128K"
activity-extent = "16M"
activity-log-extents = 64
on-peer-loss = "fail-stop"
on-io-error = "pass-on"
resync-rate = "200M"
resync-max-inflight = 16
resync-checksums = true
initial-sync = "skip"
primary = "beta.example.com"
control-group = "mirrord"

[[node]]
name = "alpha.example.com"
address = "10.0.0.1:7788"
backing = "/dev/vg0/db"
metadata = "/var/lib/mirrord/db.meta"
nbd-listen = [
  "unix:/run/mirrord/db.nbd", "127.0.0.1:10809", "[::1]:10810",
  "[fe80::1%eth0]:10811", "db-a.example.com:10812",
]
nbd-allow-remote = true
control = "/run/mirrord/db-a.ctl"

[[node]]
name = "beta.example.com"
address = "[fd00::2]:7788"
backing = "/srv/db.img"
metadata = "/srv/db.meta"
nbd-listen = []
control = "/run/db.ctl"
)";
  auto r = parse_volume_config(text, kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  const VolumeConfig& c = *r;
  EXPECT_EQ(c.file, kFile);
  EXPECT_EQ(c.name, "db");
  EXPECT_EQ(c.size, 1ull << 40);
  EXPECT_EQ(c.secret, "s3cret-s3cret-s3cret");
  EXPECT_EQ(c.ack_timeout_ms, 750u);
  EXPECT_EQ(c.granularity, 128u << 10);
  EXPECT_EQ(c.al_extent, 16u << 20);
  EXPECT_EQ(c.al_extents, 64u);
  EXPECT_EQ(c.on_peer_loss, OnPeerLoss::kFailStop);
  EXPECT_EQ(c.on_io_error, OnIoError::kPassOn);
  EXPECT_EQ(c.resync_rate, 200ull << 20);
  EXPECT_EQ(c.resync_max_inflight, 16u);
  EXPECT_TRUE(c.resync_checksums);
  EXPECT_EQ(c.initial_sync, InitialSync::kSkip);
  EXPECT_EQ(c.primary, "beta.example.com");
  EXPECT_EQ(c.control_group, "mirrord");
  ASSERT_EQ(c.nodes.size(), 2u);
  const NodeConfig& a = c.nodes[0];
  EXPECT_EQ(a.name, "alpha.example.com");
  EXPECT_EQ(a.address, "10.0.0.1:7788");
  EXPECT_EQ(a.backing, "/dev/vg0/db");
  EXPECT_EQ(a.metadata, "/var/lib/mirrord/db.meta");
  EXPECT_EQ(a.control, "/run/mirrord/db-a.ctl");
  EXPECT_EQ(a.nbd_listen,
            (std::vector<std::string>{"unix:/run/mirrord/db.nbd", "127.0.0.1:10809", "[::1]:10810",
                                      "[fe80::1%eth0]:10811", "db-a.example.com:10812"}));
  EXPECT_TRUE(a.nbd_allow_remote);
  const NodeConfig& b = c.nodes[1];
  EXPECT_EQ(b.address, "[fd00::2]:7788");
  EXPECT_EQ(b.backing, "/srv/db.img");
  EXPECT_EQ(b.metadata, "/srv/db.meta");
  EXPECT_EQ(b.control, "/run/db.ctl");
  EXPECT_TRUE(b.nbd_listen.empty());
  EXPECT_FALSE(b.nbd_allow_remote);
  EXPECT_EQ(c.node("beta.example.com"), &b);
  EXPECT_EQ(c.peer_of("beta.example.com"), &a);
  EXPECT_EQ(c.peer_of("alpha.example.com"), &b);
  EXPECT_EQ(c.node("gamma"), nullptr);
  EXPECT_EQ(c.peer_of("gamma"), nullptr);
  EXPECT_EQ(to_string(c.on_peer_loss), "fail-stop");
  EXPECT_EQ(to_string(c.on_io_error), "pass-on");
  EXPECT_EQ(to_string(c.initial_sync), "skip");
}

TEST(Config, Defaults) {
  auto r = parse_volume_config(kMinimal, kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  const VolumeConfig& c = *r;
  EXPECT_EQ(c.size, 10ull << 30);
  EXPECT_EQ(c.secret, kSecret);
  EXPECT_EQ(c.ack_timeout_ms, 5000u);
  EXPECT_EQ(c.granularity, 64u << 10);
  EXPECT_EQ(c.al_extent, 4u << 20);
  EXPECT_EQ(c.al_extents, 1237u);
  EXPECT_EQ(c.on_peer_loss, OnPeerLoss::kContinue);
  EXPECT_EQ(c.on_io_error, OnIoError::kDetach);
  EXPECT_EQ(c.resync_rate, 0u);
  EXPECT_EQ(c.resync_max_inflight, 8u);
  EXPECT_FALSE(c.resync_checksums);
  EXPECT_EQ(c.initial_sync, InitialSync::kFull);
  EXPECT_EQ(c.primary, "alpha");
  EXPECT_EQ(c.control_group, "");
  for (const auto& n : c.nodes) {
    EXPECT_EQ(n.nbd_listen, std::vector<std::string>{"unix:/run/mirrord/db.nbd"});
    EXPECT_EQ(n.control, "/run/mirrord/db.ctl");
  }
}

TEST(Config, IntegersAreBytes) {
  std::string text = with("size = \"10G\"", "size = 1048576");
  text = with("primary", "bitmap-granularity = 8192\nresync-rate = 0\nprimary", text);
  auto r = parse_volume_config(text, kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->size, 1048576u);
  EXPECT_EQ(r->granularity, 8192u);
  EXPECT_EQ(r->resync_rate, 0u);
}

struct ErrorCase {
  std::string from, to;  // applied to kMinimal
  std::string expect;    // a substring of the message, after "FILE: "
};

class ConfigError : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigError, NamesFileKeyAndProblem) {
  const ErrorCase& c = GetParam();
  auto r = parse_volume_config(with(c.from, c.to), kFile);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_THAT(r.error().message, HasSubstr(std::string(kFile) + ": " + c.expect));
  EXPECT_THAT(r.error().message, ::testing::Not(HasSubstr(kSecret)));
}

const std::string kNode2 = "name = \"beta\"\naddress = \"10.0.0.2:7788\"";

INSTANTIATE_TEST_SUITE_P(
    Cases, ConfigError,
    ::testing::Values(
        // Unknown keys, with a suggestion for typos.
        ErrorCase{"size =", "sise =", "volume.sise: unknown key (did you mean size?)"},
        ErrorCase{"address = \"10.0.0.2", "adress = \"10.0.0.2",
                  "node[2].adress: unknown key (did you mean address?)"},
        ErrorCase{"[volume]", "[volume]\n\"odd key\" = 1", "volume.\"odd key\": unknown key"},
        ErrorCase{"[volume]", "[nodes]\n[volume]", "nodes: unknown key (did you mean node?)"},
        ErrorCase{"[volume]", "[volume.extra]\n[volume]", "volume.extra: unknown key"},
        // Missing keys and tables.
        ErrorCase{"[volume]", "[volumes]", "volumes: unknown key (did you mean volume?)"},
        ErrorCase{"name = \"db\"\n", "", "volume.name: missing"},
        ErrorCase{"size = \"10G\"\n", "", "volume.size: missing"},
        ErrorCase{"primary = \"alpha\"\n", "", "volume.primary: missing"},
        ErrorCase{"name = \"beta\"\n", "", "node[2].name: missing"},
        ErrorCase{"address = \"10.0.0.1:7788\"\n", "", "node[1].address: missing"},
        ErrorCase{"backing = \"/dev/vg1/db\"\n", "", "node[2].backing: missing"},
        ErrorCase{"metadata = \"/var/lib/mirrord/db.meta\"\n", "", "node[1].metadata: missing"},
        // Volume keys.
        ErrorCase{"name = \"db\"", "name = \"../db\"",
                  "volume.name: \"../db\" is not a volume name"},
        ErrorCase{"name = \"db\"", "name = 7", "volume.name: must be a string, not an integer"},
        ErrorCase{"\"10G\"", "\"0\"", "volume.size: must be greater than 0"},
        ErrorCase{"\"10G\"", "\"1000\"", "volume.size: \"1000\" is not a multiple of 4096 bytes"},
        ErrorCase{"\"10G\"", "4097", "volume.size: 4097 is not a multiple of 4096 bytes"},
        ErrorCase{"\"10G\"", "-4096", "volume.size: -4096 is negative"},
        ErrorCase{"\"10G\"", "\"10GB\"", "volume.size: \"10GB\" is not a size"},
        ErrorCase{"\"10G\"", "\"8388608T\"", "volume.size: \"8388608T\" is too large"},
        ErrorCase{"\"10G\"", "1.5", "volume.size: must be a size"},
        ErrorCase{"primary", "ack-timeout = \"5\"\nprimary",
                  "volume.ack-timeout: \"5\" is not a duration: a unit is required"},
        ErrorCase{"primary", "ack-timeout = 5\nprimary",
                  "volume.ack-timeout: must be a duration string like \"5s\", not an integer"},
        ErrorCase{"primary", "ack-timeout = \"0s\"\nprimary",
                  "volume.ack-timeout: \"0s\" is out of range"},
        ErrorCase{"primary", "ack-timeout = \"2h\"\nprimary",
                  "volume.ack-timeout: \"2h\" is out of range"},
        ErrorCase{"primary", "bitmap-granularity = \"48K\"\nprimary",
                  "volume.bitmap-granularity: \"48K\" must be a power of two from 4K to 64M"},
        ErrorCase{"primary", "bitmap-granularity = \"2K\"\nprimary",
                  "volume.bitmap-granularity: \"2K\" must be a power of two"},
        ErrorCase{"primary", "bitmap-granularity = \"128M\"\nprimary",
                  "volume.bitmap-granularity: \"128M\" must be a power of two"},
        ErrorCase{"primary", "activity-extent = \"3M\"\nprimary",
                  "volume.activity-extent: \"3M\" must be a power of two"},
        ErrorCase{"primary", "activity-extent = \"32K\"\nprimary",
                  "volume.activity-extent: 32768 bytes is smaller than "
                  "volume.bitmap-granularity (65536 bytes)"},
        ErrorCase{"primary", "on-peer-loss = \"stop\"\nprimary",
                  "volume.on-peer-loss: \"stop\" is not \"continue\" or \"fail-stop\""},
        ErrorCase{"primary", "on-io-error = \"panic\"\nprimary",
                  "volume.on-io-error: \"panic\" is not \"detach\" or \"pass-on\""},
        ErrorCase{"primary", "initial-sync = \"none\"\nprimary",
                  "volume.initial-sync: \"none\" is not \"full\" or \"skip\""},
        ErrorCase{"primary", "resync-rate = \"1K\"\nprimary",
                  "volume.resync-rate: \"1K\" is below one bitmap chunk per second"},
        ErrorCase{"primary", "resync-rate = \"fast\"\nprimary",
                  "volume.resync-rate: \"fast\" is not a size"},
        ErrorCase{"primary", "resync-checksums = \"sha256\"\nprimary",
                  "volume.resync-checksums: must be true or false, not a string"},
        ErrorCase{"primary", "resync-checksums = 1\nprimary",
                  "volume.resync-checksums: must be true or false, not an integer"},
        ErrorCase{"primary", "resync-max-inflight = 0\nprimary",
                  "volume.resync-max-inflight: 0 is out of range (1 to 1024)"},
        ErrorCase{"primary", "activity-log-extents = 0\nprimary",
                  "volume.activity-log-extents: 0 is out of range (1 to 65534)"},
        ErrorCase{"primary", "resync-max-inflight = \"8\"\nprimary",
                  "volume.resync-max-inflight: must be an integer, not a string"},
        ErrorCase{"primary", "control-group = \"a b\"\nprimary",
                  "volume.control-group: \"a b\" is not a valid group name"},
        ErrorCase{"primary = \"alpha\"", "primary = \"gamma\"",
                  "volume.primary: \"gamma\" is not a node name (nodes: \"alpha\", \"beta\")"},
        // Secrets (the value never appears; checked by the fixture).
        ErrorCase{"secret = \"0123456789abcdef-secret\"", "secret = \"short\"",
                  "volume.secret: too short: at least 16 bytes required"},
        ErrorCase{"secret = \"0123456789abcdef-secret\"", "secret = 1234567890123456789",
                  "volume.secret: must be a string, not an integer"},
        ErrorCase{"secret = \"0123456789abcdef-secret\"", "",
                  "volume.secret-file: missing: set secret-file"},
        ErrorCase{"primary", "secret-file = \"/etc/mirrord/db.secret\"\nprimary",
                  "volume.secret: set either secret or secret-file, not both"},
        ErrorCase{"secret = \"0123456789abcdef-secret\"", "secret-file = \"db.secret\"",
                  "volume.secret-file: \"db.secret\" must be an absolute path"},
        // Node list.
        ErrorCase{"[[node]]\n" + kNode2, "[[node-x]]\n" + kNode2,
                  "node-x: unknown key (did you mean node?)"},
        ErrorCase{"[[node]]\nname = \"alpha\"", "[[node]]\n[[node]]\nname = \"alpha\"",
                  "node: found 3 [[node]] tables; a volume has exactly 2"},
        // Node keys.
        ErrorCase{"\"10.0.0.2:7788\"", "\"10.0.0.2\"",
                  "node[2].address: \"10.0.0.2\" is not HOST:PORT"},
        ErrorCase{"\"10.0.0.2:7788\"", "\"unix:/run/x\"",
                  "node[2].address: \"unix:/run/x\" is not HOST:PORT: replication runs over TCP"},
        ErrorCase{"\"10.0.0.2:7788\"", "\"10.0.0.2:0\"",
                  "node[2].address: \"10.0.0.2:0\" is not HOST:PORT: port 0"},
        ErrorCase{"\"10.0.0.2:7788\"", "\"fd00::2:7788\"",
                  "node[2].address: \"fd00::2:7788\" is not HOST:PORT: write an IPv6 address in "
                  "brackets, \"[ADDR]:PORT\""},
        ErrorCase{"\"10.0.0.2:7788\"", "\"{fd00::2]:7788\"",
                  "node[2].address: \"{fd00::2]:7788\" is not HOST:PORT: write an IPv6"},
        ErrorCase{"\"10.0.0.2:7788\"", "\"[fd00::g]:7788\"",
                  "node[2].address: \"[fd00::g]:7788\" is not HOST:PORT: \"fd00::g\" is not an "
                  "IPv6 address"},
        ErrorCase{"\"10.0.0.2:7788\"", "\"[10.0.0.2]:7788\"",
                  "node[2].address: \"[10.0.0.2]:7788\" is not HOST:PORT: \"10.0.0.2\" is not an "
                  "IPv6 address"},
        ErrorCase{"\"10.0.0.2:7788\"", "\"db 2:7788\"",
                  "node[2].address: \"db 2:7788\" is not HOST:PORT: \"db 2\" is not a host name "
                  "or IP address"},
        ErrorCase{"name = \"beta\"", "name = \"beta\"\nnbd-listen = [\"-x:10809\"]",
                  "node[2].nbd-listen[1]: \"-x:10809\" is not HOST:PORT or unix:PATH: \"-x\" is "
                  "not a host name or IP address"},
        ErrorCase{"\"10.0.0.2:7788\"", "\"10.0.0.1:7788\"",
                  "node[2].address: \"10.0.0.1:7788\" is also node[1].address"},
        ErrorCase{"name = \"beta\"", "name = \"ALPHA\"",
                  "node[2].name: \"ALPHA\" is also node[1].name"},
        ErrorCase{"name = \"beta\"", "name = \"be ta\"",
                  "node[2].name: \"be ta\" is not a node name"},
        ErrorCase{"name = \"beta\"", "name = \"" + std::string(65, 'b') + "\"",
                  "node[2].name: \"bbbb"},
        ErrorCase{"\"/dev/vg0/db\"", "\"dev/vg0/db\"",
                  "node[1].backing: \"dev/vg0/db\" must be an absolute path"},
        ErrorCase{"\"/var/lib/mirrord/db.meta\"", "\"/dev/vg0/db\"",
                  "node[1].metadata: \"/dev/vg0/db\" is also the backing device"},
        ErrorCase{"name = \"beta\"", "name = \"beta\"\nnbd-listen = \"unix:/run/x\"",
                  "node[2].nbd-listen: must be an array of strings, not a string"},
        ErrorCase{"name = \"beta\"", "name = \"beta\"\nnbd-listen = [\"unix:/a\", \"nope\"]",
                  "node[2].nbd-listen[2]: \"nope\" is not HOST:PORT or unix:PATH"},
        ErrorCase{"name = \"beta\"", "name = \"beta\"\nnbd-listen = [\"unix:rel.sock\"]",
                  "node[2].nbd-listen[1]: \"unix:rel.sock\": the socket path must be absolute"},
        ErrorCase{"name = \"beta\"", "name = \"beta\"\nnbd-listen = [\"localhost:1\", \"localhost:1\"]",
                  "node[2].nbd-listen[2]: \"localhost:1\" is listed twice"},
        ErrorCase{"name = \"beta\"", "name = \"beta\"\nnbd-allow-remote = \"yes\"",
                  "node[2].nbd-allow-remote: must be true, false or \"tls\", not a string"},
        ErrorCase{"name = \"beta\"", "name = \"beta\"\nnbd-listen = [1]",
                  "node[2].nbd-listen[1]: must be a string, not an integer"},
        ErrorCase{"name = \"beta\"", "name = \"beta\"\ncontrol = \"/run/mirrord/db.nbd\"",
                  "node[2].control: \"/run/mirrord/db.nbd\" is also the default nbd-listen"},
        ErrorCase{"name = \"beta\"",
                  "name = \"beta\"\ncontrol = \"/run/c\"\nnbd-listen = [\"unix:/run/c\"]",
                  "node[2].nbd-listen[1]: \"unix:/run/c\" is also the control socket"},
        ErrorCase{"name = \"beta\"",
                  "name = \"beta\"\ncontrol = \"/" + std::string(120, 'c') + "\"",
                  "node[2].control: \"/ccc"},
        ErrorCase{"name = \"beta\"", "name = \"beta\\u0000x\"",
                  "node[2].name: contains a NUL character"}));

// NBD clients are not authenticated: a listener other hosts can reach must
// be asked for by name, never the result of a typo or a copied example.
TEST(Config, RemoteNbdListenerNeedsExplicitConsent) {
  for (std::string addr : {"0.0.0.0:10809", "10.0.0.2:10809", "[::]:10809", "[fd00::2]:10809",
                           "[fe80::1%eth0]:10809", "db-b.example.com:10809", "128.0.0.1:10809"}) {
    std::string nbd = "nbd-listen = [\"unix:/run/b.nbd\", \"" + addr + "\"]";
    std::string msg = parse_error(with("name = \"beta\"", "name = \"beta\"\n" + nbd));
    EXPECT_THAT(msg, HasSubstr(std::string(kFile) + ": node[2].nbd-listen[2]: \"" + addr +
                               "\" is not a loopback address"))
        << addr;
    EXPECT_THAT(msg, HasSubstr("set nbd-allow-remote = true")) << addr;
    auto r = parse_volume_config(
        with("name = \"beta\"", "name = \"beta\"\nnbd-allow-remote = true\n" + nbd), kFile);
    ASSERT_TRUE(r.ok()) << addr << ": " << r.error().to_string();
    EXPECT_EQ(r->nodes[1].nbd_listen.back(), addr);
    // Consent is per node: the other node is still held to loopback.
    EXPECT_FALSE(r->nodes[0].nbd_allow_remote);
  }
  for (std::string addr : {"127.0.0.1:10809", "127.1.2.3:0", "[::1]:10809",
                           "[::ffff:127.0.0.1]:10809", "localhost:10809", "LOCALHOST:1"}) {
    auto r = parse_volume_config(
        with("name = \"beta\"", "name = \"beta\"\nnbd-listen = [\"" + addr + "\"]"), kFile);
    ASSERT_TRUE(r.ok()) << addr << ": " << r.error().to_string();
  }
}

// TLS on the NBD exports: per node, every mistake names its key.
TEST(Config, NbdTlsKeys) {
  auto r = parse_volume_config(
      with("name = \"beta\"", R"(name = "beta"
nbd-tls = "require"
nbd-tls-cert = "/etc/mirrord/nbd.pem"
nbd-tls-key = "/etc/mirrord/nbd.key"
nbd-tls-ca = "/etc/mirrord/clients-ca.pem"
nbd-allow-remote = "tls"
nbd-listen = ["0.0.0.0:10809"])"),
      kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  const NodeConfig& b = r->nodes[1];
  EXPECT_EQ(b.nbd_tls, nbd::TlsMode::kRequire);
  EXPECT_EQ(b.nbd_tls_cert, "/etc/mirrord/nbd.pem");
  EXPECT_EQ(b.nbd_tls_key, "/etc/mirrord/nbd.key");
  EXPECT_EQ(b.nbd_tls_ca, "/etc/mirrord/clients-ca.pem");
  EXPECT_TRUE(b.nbd_allow_remote);
  EXPECT_TRUE(b.nbd_remote_needs_tls);
  EXPECT_EQ(r->nodes[0].nbd_tls, nbd::TlsMode::kOff) << "off unless asked for, per node";
}

TEST(Config, NbdTlsErrors) {
  const std::string cert = "nbd-tls-cert = \"/c.pem\"\nnbd-tls-key = \"/c.key\"\n";
  struct Case {
    std::string lines, error;
  } cases[] = {
      {"nbd-tls = \"on\"", "node[2].nbd-tls: \"on\" is not \"off\", \"optional\" or \"require\""},
      {"nbd-tls = true", "node[2].nbd-tls: must be a string, not a boolean"},
      {"nbd-tls = \"require\"", "node[2].nbd-tls-cert: missing: nbd-tls = \"require\" needs"},
      {"nbd-tls = \"optional\"\nnbd-tls-cert = \"/c.pem\"",
       "node[2].nbd-tls-key: missing: nbd-tls = \"optional\" needs the private key"},
      {cert, "node[2].nbd-tls-cert: set, but nbd-tls is off"},
      {"nbd-tls = \"require\"\n" + cert + "nbd-tls-ca = \"ca.pem\"",
       "node[2].nbd-tls-ca: \"ca.pem\" must be an absolute path"},
      {"nbd-allow-remote = \"tls\"", "node[2].nbd-tls: must be \"require\": nbd-allow-remote = \"tls\""},
      {"nbd-allow-remote = \"tls\"\nnbd-tls = \"optional\"\n" + cert,
       "node[2].nbd-tls: must be \"require\""},
  };
  for (const Case& c : cases) {
    std::string msg = parse_error(with("name = \"beta\"", "name = \"beta\"\n" + c.lines));
    EXPECT_THAT(msg, HasSubstr(std::string(kFile) + ": " + c.error)) << c.lines;
  }
}

TEST(Config, TlsKeys) {
  std::string text = with("primary", R"(tls = true
tls-ca = "/etc/mirrord/ca.pem"
tls-cert = "/etc/mirrord/node.pem"
tls-key = "/etc/mirrord/node.key"
primary)");
  text = with("name = \"beta\"",
              "name = \"beta\"\ntls-cert = \"/srv/beta.pem\"\ntls-key = \"/srv/beta.key\"", text);
  auto r = parse_volume_config(text, kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(r->tls);
  EXPECT_EQ(r->tls_ca, "/etc/mirrord/ca.pem");
  // A node without its own keys uses the volume's; a node's own win.
  EXPECT_EQ(r->nodes[0].tls_cert, "/etc/mirrord/node.pem");
  EXPECT_EQ(r->nodes[0].tls_key, "/etc/mirrord/node.key");
  EXPECT_EQ(r->nodes[1].tls_cert, "/srv/beta.pem");
  EXPECT_EQ(r->nodes[1].tls_key, "/srv/beta.key");

  auto plain = parse_volume_config(kMinimal, kFile);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->tls);
  EXPECT_TRUE(plain->nodes[0].tls_cert.empty());
}

TEST(Config, TlsErrors) {
  const std::string ca = "tls-ca = \"/ca.pem\"\n";
  const std::string both = "tls-cert = \"/n.pem\"\ntls-key = \"/n.key\"\n";
  struct Case {
    std::string volume_lines, beta_lines, expect;
  } cases[] = {
      {"tls = \"yes\"\n", "", "volume.tls: must be true or false, not a string"},
      {"tls = true\n" + both, "", "volume.tls-ca: missing: tls = true needs the CA"},
      {"tls = true\ntls-ca = \"ca.pem\"\n" + both, "", "volume.tls-ca: \"ca.pem\" must be an absolute path"},
      {"tls = true\n" + ca, "", "node[1].tls-cert: missing: tls = true needs this node's certificate"},
      {"tls = true\n" + ca + "tls-cert = \"/n.pem\"\n", "",
       "node[1].tls-key: missing: tls = true needs this node's private key"},
      {"tls = true\n" + ca + "tls-key = \"/n.key\"\n", "tls-cert = \"/b.pem\"",
       "node[1].tls-cert: missing"},
      // TLS keys without tls = true: the link would silently be plaintext.
      {ca + both, "", "volume.tls-cert: set, but volume.tls is not true"},
      {"tls = false\n", "tls-cert = \"/b.pem\"", "node[2].tls-cert: set, but volume.tls is not true"},
      {"tls = true\n" + ca + both, "tls-key = 3", "node[2].tls-key: must be a string, not an integer"},
  };
  for (const Case& c : cases) {
    std::string text = with("primary", c.volume_lines + "primary");
    if (!c.beta_lines.empty()) text = with("name = \"beta\"", "name = \"beta\"\n" + c.beta_lines, text);
    EXPECT_THAT(parse_error(text), HasSubstr(std::string(kFile) + ": " + c.expect)) << text;
  }
}

TEST(Config, NodeTablesMustBeAnArray) {
  std::string head = kMinimal.substr(0, kMinimal.find("[[node]]"));
  std::string msg = parse_error(head + "[node.alpha]\naddress = \"10.0.0.1:1\"\n" +
                                "[node.beta]\naddress = \"10.0.0.2:1\"\n");
  EXPECT_THAT(msg, HasSubstr(std::string(kFile) +
                             ": node: must be an array of tables written [[node]], not a table "
                             "([node] or [node.NAME])"));
  msg = parse_error("node = [1, 2]\n" + head);
  EXPECT_THAT(msg, HasSubstr(": node[1]: must be a table, not an integer"));
  msg = parse_error(head);
  EXPECT_THAT(msg, HasSubstr(": node: missing: a volume needs two [[node]] tables"));
}

TEST(Config, SyntaxErrorHasLineAndColumn) {
  std::string msg = parse_error(with("size = \"10G\"", "size = = 3"));
  EXPECT_THAT(msg, HasSubstr(std::string(kFile) + ":4:")) << msg;
}

TEST(Config, SyntaxErrorOnSecretLineDoesNotEchoIt) {
  // An invalid escape: toml++ would quote the character after the backslash.
  std::string msg =
      parse_error(with("secret = \"0123456789abcdef-secret\"", "secret = \"0123456789\\qsecret\""));
  EXPECT_THAT(msg, HasSubstr(std::string(kFile) + ":5:")) << msg;
  EXPECT_THAT(msg, HasSubstr("details withheld"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("q")));
}

// toml++ 3.3.0 has undefined behaviour on some non-ASCII characters (see
// toml_whitespace_test_is_undefined); they, and invalid UTF-8, are refused.
TEST(Config, UnsupportedCharactersAreRefused) {
  EXPECT_EQ(parse_error(with("primary", "pr\xcf\x8dmary")),
            std::string(kFile) +
                ":6:3: character U+03CD is not supported, even in a string or comment (a bug in "
                "toml++ 3.3.0); use ASCII");
  EXPECT_THAT(parse_error(with("[volume]",
                               "# Gr\xc3\xb6\xc3\x9f"
                               "e\n[volume]")),
              HasSubstr(":2:5: character U+00F6 is not supported"));
  EXPECT_THAT(parse_error(with("\"db\"", "\"\xe3\x81\x82\"")),  // hiragana
              HasSubstr(":3:9: character U+3042 is not supported"));
  EXPECT_THAT(parse_error(with("\"db\"", "\"\xef\xbb\xb7\"")),  // Arabic presentation form
              HasSubstr(":3:9: character U+FEF7 is not supported"));
  for (const char* bad : {"\xff", "\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                          "\xf4\x90\x80\x80", "\xe2\x28\xa1"}) {
    EXPECT_THAT(parse_error(with("\"db\"", std::string("\"d") + bad + "\"")),
                HasSubstr(":3:10: invalid UTF-8"))
        << bad;
  }
}

TEST(Config, OtherNonAsciiIsFine) {
  // BOM, em dash, CJK ideographs, Hangul, emoji, curly quotes, NBSP in a comment.
  std::string text =
      "\xef\xbb\xbf# \xe2\x80\x94 \xe6\xbc\xa2\xe5\xad\x97 \xed\x95\x9c "
      "\xf0\x9f\x98\x80 \xe2\x80\x9cq\xe2\x80\x9d \xc2\xa0\n" +
      with("\"/dev/vg0/db\"", "\"/srv/\xe6\xbc\xa2/\xf0\x9f\x98\x80.img\" # \xe6\xbc\xa2");
  text = with("\"/var/lib/mirrord/db.meta\"", "'/var/lib/\xe2\x80\x94\"'", text);
  text = with("\"/var/lib/mirrord/db.meta\"", "\"\"\"/var/lib/\\\n  \xed\x95\x9c\"\"\"", text);
  auto r = parse_volume_config(text, kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->nodes[0].backing, "/srv/\xe6\xbc\xa2/\xf0\x9f\x98\x80.img");
  EXPECT_EQ(r->nodes[0].metadata, "/var/lib/\xe2\x80\x94\"");
  EXPECT_EQ(r->nodes[1].metadata, "/var/lib/\xed\x95\x9c");
}

TEST(Config, ErrorsEscapeControlCharacters) {
  std::string msg = parse_error(with("primary = \"alpha\"", "primary = \"a\\u001b[2Jb\""));
  EXPECT_THAT(msg, HasSubstr("\"a\\x1b[2Jb\" is not a node name"));
  EXPECT_EQ(msg.find('\x1b'), std::string::npos);
}

TEST(Config, GarbageNeverThrows) {
  for (std::string text : {std::string(), std::string("\0\xff\xfe", 3), std::string(1000, '['),
                           std::string("volume = 1\n"), std::string("[[volume]]\n"),
                           std::string("node = [1, 2]\n[volume]"),
                           // Malformed headers (toml++ upstream #301) must be parse errors.
                           std::string("[[[1]]]"), std::string("[[=\n"),
                           std::string("[[node]]\n[\0\0&name = \"x\"", 24)}) {
    auto r = parse_volume_config(text, kFile);
    EXPECT_FALSE(r.ok());
    EXPECT_THAT(r.error().message, HasSubstr(kFile));
  }
  EXPECT_THAT(parse_error("[volume]\n"), HasSubstr("volume.name: missing"));
  EXPECT_THAT(parse_error(""), HasSubstr(": volume: missing"));
  EXPECT_THAT(parse_error("volume = 1"), HasSubstr(": volume: must be a table, not an integer"));
}

TEST(ParseSize, Accepts) {
  EXPECT_EQ(parse_size("0").value(), 0u);
  EXPECT_EQ(parse_size("4096").value(), 4096u);
  EXPECT_EQ(parse_size("64K").value(), 64u << 10);
  EXPECT_EQ(parse_size("64k").value(), 64u << 10);
  EXPECT_EQ(parse_size("4M").value(), 4u << 20);
  EXPECT_EQ(parse_size("10G").value(), 10ull << 30);
  EXPECT_EQ(parse_size("2T").value(), 2ull << 40);
  EXPECT_EQ(parse_size("16777215T").value(), 16777215ull << 40);
  EXPECT_EQ(parse_size("18446744073709551615").value(), UINT64_MAX);
}

TEST(ParseSize, Rejects) {
  for (const char* s : {"", "G", "-1", "+1", " 1", "1 ", "1.5G", "10GB", "10GiB", "1P", "0x10",
                        "18446744073709551616", "16777216T"}) {
    auto r = parse_size(s);
    EXPECT_FALSE(r.ok()) << s;
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, EINVAL);
      EXPECT_THAT(r.error().message, HasSubstr("is not a size")) << s;
    }
  }
  EXPECT_THAT(parse_size("16777216T").error().message, HasSubstr("too large"));
}

TEST(ParseDuration, Accepts) {
  EXPECT_EQ(parse_duration_ms("0ms").value(), 0u);
  EXPECT_EQ(parse_duration_ms("500ms").value(), 500u);
  EXPECT_EQ(parse_duration_ms("5s").value(), 5000u);
  EXPECT_EQ(parse_duration_ms("2m").value(), 120000u);
  EXPECT_EQ(parse_duration_ms("2min").value(), 120000u);
  EXPECT_EQ(parse_duration_ms("1h").value(), 3600000u);
  EXPECT_EQ(parse_duration_ms("4294967295ms").value(), UINT32_MAX);
}

TEST(ParseDuration, Rejects) {
  for (const char* s : {"", "5", "s", "5 s", "5S", "-5s", "1.5s", "5sec", "4294967296ms", "1194h",
                        "99999999999999999999s"}) {
    auto r = parse_duration_ms(s);
    EXPECT_FALSE(r.ok()) << s;
    if (!r.ok()) {
      EXPECT_THAT(r.error().message, HasSubstr("is not a duration")) << s;
    }
  }
  EXPECT_THAT(parse_duration_ms("5").error().message, HasSubstr("a unit is required"));
  EXPECT_THAT(parse_duration_ms("1.5s").error().message, HasSubstr("fractions"));
}

std::string with_secret_file(const std::string& path) {
  return with("secret = \"0123456789abcdef-secret\"", "secret-file = \"" + path + "\"");
}

TEST(SecretFile, ReadAndTrailingNewlineStripped) {
  TempDir dir;
  auto r = parse_volume_config(
      with_secret_file(dir.write("a.secret", " sixteen  bytes!! \n", 0600)), kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->secret, " sixteen  bytes!! ");  // only the newline goes
  r = parse_volume_config(with_secret_file(dir.write("b.secret", "0123456789abcdef\r\n", 0400)),
                          kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->secret, "0123456789abcdef");
  r = parse_volume_config(
      with_secret_file(dir.write("c.secret", std::string("0123456789\0abcdef", 17), 0600)), kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->secret.size(), 17u);
}

TEST(SecretFile, TooShortAfterTrimming) {
  TempDir dir;
  // 16 bytes only with its newline: too short once the newline is stripped.
  std::string path = dir.write("db.secret", "0123456789abcde\n", 0600);
  auto r = parse_volume_config(with_secret_file(path), kFile);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message,
              HasSubstr(std::string(kFile) + ": volume.secret-file: the secret in \"" + path +
                        "\" is too short: at least 16 bytes"));
  EXPECT_THAT(r.error().message, ::testing::Not(HasSubstr("0123456789abcde")));
}

TEST(SecretFile, TooLong) {
  TempDir dir;
  auto r =
      parse_volume_config(with_secret_file(dir.write("s", std::string(5000, 'x'), 0600)), kFile);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("is too long: at most 4096 bytes"));
}

TEST(SecretFile, Missing) {
  TempDir dir;
  auto r = parse_volume_config(with_secret_file(dir.path() + "/nope.secret"), kFile);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_THAT(r.error().message,
              HasSubstr(std::string(kFile) + ": volume.secret-file: cannot open"));
}

TEST(SecretFile, ReadableByOthers) {
  TempDir dir;
  for (mode_t mode : {0644, 0640, 0604}) {
    std::string path = dir.write("db.secret", "0123456789abcdef\n", mode);
    auto r = parse_volume_config(with_secret_file(path), kFile);
    ASSERT_FALSE(r.ok()) << std::oct << mode;
    EXPECT_EQ(r.error().code, EPERM);
    EXPECT_THAT(r.error().message, HasSubstr("volume.secret-file: \"" + path +
                                             "\" is readable by group or others; run chmod 600"));
  }
}

TEST(SecretFile, NotARegularFile) {
  TempDir dir;
  std::string fifo = dir.path() + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Opened non-blocking: must fail at once, not hang waiting for a writer.
  auto r = parse_volume_config(with_secret_file(fifo), kFile);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("is not a regular file"));
  r = parse_volume_config(with_secret_file(dir.path()), kFile);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("is not a regular file"));
}

TEST(Load, InlineSecretNeedsPrivateFile) {
  TempDir dir;
  std::string path = dir.write("db.toml", kMinimal, 0644);
  auto r = load_volume_config(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EPERM);
  EXPECT_THAT(r.error().message,
              HasSubstr(path +
                        ": volume.secret: the file holds an inline secret but group or "
                        "others can read it (mode 0644); run chmod 600 " +
                        path + " or move the secret to secret-file"));
  EXPECT_THAT(r.error().message, ::testing::Not(HasSubstr(kSecret)));

  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  EXPECT_FALSE(load_volume_config(path).ok());

  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  r = load_volume_config(path);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->file, path);
  EXPECT_EQ(r->secret, kSecret);
}

TEST(Load, SecretFileAllowsReadableVolumeFile) {
  TempDir dir;
  std::string secret = dir.write("db.secret", "0123456789abcdef\n", 0600);
  std::string path = dir.write("db.toml", with_secret_file(secret), 0644);
  auto r = load_volume_config(path);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->secret, "0123456789abcdef");
}

TEST(Load, Errors) {
  TempDir dir;
  auto r = load_volume_config(dir.path() + "/missing.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_THAT(r.error().message, HasSubstr("/missing.toml: cannot open"));
  r = load_volume_config(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("not a regular file"));
  std::string bad = dir.write("bad.toml", with("10.0.0.2:7788", "10.0.0.2"), 0600);
  r = load_volume_config(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, bad + ": node[2].address: \"10.0.0.2\" is not HOST:PORT");
}

TEST(Example, SystemdExampleParses) {
  std::ifstream in(MIRROR_EXAMPLE_TOML);
  ASSERT_TRUE(in) << MIRROR_EXAMPLE_TOML;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TempDir dir;
  std::string secret = dir.write("db.secret", "c2VjcmV0LXNlY3JldC1zZWNyZXQK\n", 0600);
  auto r = parse_volume_config(with("\"/etc/mirrord/db.secret\"", "\"" + secret + "\"", text),
                               MIRROR_EXAMPLE_TOML);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->name, "db");
  EXPECT_EQ(r->size, 100ull << 30);
  EXPECT_EQ(r->primary, "alpha");
  EXPECT_EQ(r->nodes[1].nbd_listen,
            (std::vector<std::string>{"unix:/run/mirrord/db.nbd", "10.0.0.2:10809"}));
}

VolumeConfig two_nodes(const std::string& a, const std::string& b) {
  std::string text = with("name = \"alpha\"", "name = \"" + a + "\"");
  text = with("primary = \"alpha\"", "primary = \"" + a + "\"", text);
  text = with("name = \"beta\"", "name = \"" + b + "\"", text);
  auto r = parse_volume_config(text, kFile);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return r.ok() ? *r : VolumeConfig();
}

TEST(ConfigDevice, NotAttachedByDefault) {
  auto r = parse_volume_config(kMinimal, kFile);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->nodes[0].device.path.empty());
}

TEST(ConfigDevice, EveryKey) {
  auto r = parse_volume_config(
      with("metadata = \"/var/lib/mirrord/db.meta\"\n",
           "metadata = \"/var/lib/mirrord/db.meta\"\ndevice = \"/dev/nbd3\"\n"
           "device-connections = 4\ndevice-timeout = \"10s\"\n"
           "dead-connection-timeout = \"2m\"\n"),
      kFile);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const DeviceConfig& d = r->nodes[0].device;
  EXPECT_EQ(d.path, "/dev/nbd3");
  EXPECT_EQ(d.connections, 4u);
  EXPECT_EQ(d.timeout_s, 10u);
  EXPECT_EQ(d.dead_conn_timeout_s, 120u);
  EXPECT_TRUE(r->nodes[1].device.path.empty()) << "per node";
}

TEST(ConfigDevice, AutoTakesDefaults) {
  auto r = parse_volume_config(
      with("name = \"beta\"\n", "name = \"beta\"\ndevice = \"auto\"\n"), kFile);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->nodes[1].device.path, "auto");
  EXPECT_EQ(r->nodes[1].device.connections, 1u);
  EXPECT_EQ(r->nodes[1].device.timeout_s, 30u);
  EXPECT_EQ(r->nodes[1].device.dead_conn_timeout_s, 120u);
}

TEST(ConfigDevice, BadValuesNameTheKey) {
  auto node = [](const std::string& extra) {
    return with("name = \"alpha\"\n", "name = \"alpha\"\n" + extra);
  };
  EXPECT_THAT(parse_error(node("device = \"/dev/sda\"\n")),
              HasSubstr("node[1].device: '/dev/sda' is not /dev/nbdN"));
  EXPECT_THAT(parse_error(node("device = \"/dev/nbd0\"\ndevice-connections = 0\n")),
              HasSubstr("node[1].device-connections: 0 is out of range (1 to 16)"));
  EXPECT_THAT(parse_error(node("device = \"/dev/nbd0\"\ndevice-connections = 17\n")),
              HasSubstr("out of range"));
  EXPECT_THAT(parse_error(node("device = \"/dev/nbd0\"\ndevice-timeout = \"1500ms\"\n")),
              HasSubstr("node[1].device-timeout: \"1500ms\" must be whole seconds"));
  EXPECT_THAT(parse_error(node("device = \"/dev/nbd0\"\ndead-connection-timeout = 60\n")),
              HasSubstr("node[1].dead-connection-timeout"));
  EXPECT_THAT(parse_error(node("device-connections = 2\n")),
              HasSubstr("node[1].device: missing"));
}

TEST(SelectLocalNode, ByFlag) {
  VolumeConfig c = two_nodes("alpha", "beta");
  auto r = select_local_node(c, "beta");
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(*r, &c.nodes[1]);
  // The flag wins over the host name.
  r = select_local_node(c, "alpha", "beta");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, &c.nodes[0]);
}

TEST(SelectLocalNode, UnknownFlagListsNames) {
  VolumeConfig c = two_nodes("alpha", "beta");
  auto r = select_local_node(c, "gamma");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, std::string(kFile) +
                                   ": --node \"gamma\" is not a node of volume \"db\" (nodes: "
                                   "\"alpha\", \"beta\")");
}

TEST(SelectLocalNode, ByThisHostName) {
  char host[HOST_NAME_MAX + 1] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  std::string name(host);
  if (name.empty() || name == "other") GTEST_SKIP() << "unusable host name";
  VolumeConfig c = two_nodes("other", name);
  auto r = select_local_node(c, "");
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ((*r)->name, name);
}

TEST(SelectLocalNode, ByHostNameFullOrShort) {
  VolumeConfig c = two_nodes("alpha", "beta");
  EXPECT_EQ(select_local_node(c, "", "beta").value(), &c.nodes[1]);
  EXPECT_EQ(select_local_node(c, "", "BETA").value(), &c.nodes[1]);
  EXPECT_EQ(select_local_node(c, "", "beta.dc1.example.com").value(), &c.nodes[1]);

  VolumeConfig fq = two_nodes("db1.example.com", "db1");
  EXPECT_EQ(select_local_node(fq, "", "db1.example.com").value(), &fq.nodes[0]);  // exact first
  EXPECT_EQ(select_local_node(fq, "", "db1.other.net").value(), &fq.nodes[1]);
}

TEST(SelectLocalNode, NoMatchListsNames) {
  VolumeConfig c = two_nodes("alpha", "beta");
  auto r = select_local_node(c, "", "gamma.example.com");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(r.error().message, std::string(kFile) +
                                   ": no node is named after this host \"gamma.example.com\" "
                                   "(nodes: \"alpha\", \"beta\"); pass --node NAME");
}

// --- handlers (DRBD's before-/after-resync-target)

std::string with_handlers(const std::string& lines) {
  return with("primary = \"alpha\"", "primary = \"alpha\"\n" + lines);
}

TEST(Handlers, ParsedWithTheirTimeout) {
  auto r = parse_volume_config(with_handlers("before-resync-target = \"/etc/mirrord/snap\"\n"
                                             "after-resync-target = \"/etc/mirrord/unsnap\"\n"
                                             "handler-timeout = \"2m\""),
                               kFile);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->before_resync_target, "/etc/mirrord/snap");
  EXPECT_EQ(r->after_resync_target, "/etc/mirrord/unsnap");
  EXPECT_EQ(r->handler_timeout_ms, 120000u);
  auto d = parse_volume_config(kMinimal, kFile);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->before_resync_target, "");
  EXPECT_EQ(d->after_resync_target, "");
  EXPECT_EQ(d->handler_timeout_ms, 60000u);
}

TEST(Handlers, ParseErrorsNameFileAndKey) {
  EXPECT_THAT(parse_error(with_handlers("before-resync-target = \"snap.sh\"")),
              HasSubstr(std::string(kFile) +
                        ": volume.before-resync-target: \"snap.sh\" must be an absolute path"));
  EXPECT_THAT(parse_error(with_handlers("after-resync-target = 3")),
              HasSubstr(": volume.after-resync-target: must be a string"));
  EXPECT_THAT(parse_error(with_handlers("handler-timeout = \"0s\"")),
              HasSubstr(": volume.handler-timeout: \"0s\" is out of range (1s to 1h)"));
  EXPECT_THAT(parse_error(with_handlers("handler-timeout = 60")),
              HasSubstr(": volume.handler-timeout: must be a duration string"));
  EXPECT_THAT(parse_error(with_handlers("before-resync-targt = \"/x\"")),
              HasSubstr("did you mean before-resync-target?"));
}

TEST(Handlers, ProgramsCheckedAtStart) {
  TempDir dir;
  std::string ok = dir.write("snap", "#!/bin/sh\nexit 0\n", 0755);
  std::string plain = dir.write("plain", "#!/bin/sh\nexit 0\n", 0644);
  auto cfg = [&](const std::string& before, const std::string& after) {
    std::string lines;
    if (!before.empty()) lines += "before-resync-target = \"" + before + "\"\n";
    if (!after.empty()) lines += "after-resync-target = \"" + after + "\"\n";
    auto r = parse_volume_config(with_handlers(lines), kFile);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r.ok() ? *r : VolumeConfig{};
  };
  EXPECT_TRUE(check_handler_programs(cfg("", "")).ok());
  EXPECT_TRUE(check_handler_programs(cfg(ok, ok)).ok());
  auto missing = check_handler_programs(cfg(ok, dir.path() + "/gone"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message, std::string(kFile) + ": volume.after-resync-target: \"" +
                                         dir.path() + "/gone\" does not exist");
  auto not_exec = check_handler_programs(cfg(plain, ""));
  ASSERT_FALSE(not_exec.ok());
  EXPECT_THAT(not_exec.error().message,
              HasSubstr(std::string(kFile) + ": volume.before-resync-target: \"" + plain +
                        "\" is not executable"));
  auto dir_given = check_handler_programs(cfg(dir.path(), ""));
  ASSERT_FALSE(dir_given.ok());
  EXPECT_THAT(dir_given.error().message, HasSubstr("is not a regular file"));
}

}  // namespace
}  // namespace mirror
