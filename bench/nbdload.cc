// nbdload: a small closed-loop NBD load generator on libnbd's asynchronous API.
//
// Keeps exactly --qd requests in flight on one connection: every completion
// immediately issues the next request on the same slot. Requests are timed from
// just before nbd_aio_pread/pwrite is called to the completion callback, so the
// latency includes the client's own queueing inside libnbd (as a kernel client
// would see it). After --warmup seconds the counters are reset and the next
// --seconds are measured; one JSON line goes to stdout:
//
//   {"op":"write","bs":4096,"qd":1,"pattern":"rand","fua":false,"seconds":10.0,
//    "ops":123456,"iops":12345.6,"mb_s":50.6,"mean_us":80.1,"p50_us":..,
//    "p99_us":..,"p999_us":..,"max_us":..,"pre_flush_ms":..,"post_flush_ms":..}
//
// mb_s is in 10^6 bytes per second. Any I/O error aborts with exit status 1.
// Before a read test the region is pre-filled with 1 MiB writes so that reads
// return real data instead of holes or unwritten extents. Every run sends one
// FLUSH before its warm-up and one after its last request, both outside the
// measured window (timed apart as pre_flush_ms and post_flush_ms).
// With --trace FILE, every measured request is also written there as one line
// "START_UNIX_US LATENCY_US" (wall-clock start), for lining latencies up with
// events outside the client (bench/split-stall.sh: a split's write stall).

#include <libnbd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kStallLimit = std::chrono::seconds(60);

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "nbdload: %s\n", what);
  std::exit(1);
}

[[noreturn]] void die_nbd(const char* what) {
  std::fprintf(stderr, "nbdload: %s: %s\n", what, nbd_get_error());
  std::exit(1);
}

enum class Op { read, write };
enum class Pattern { rand, seq };

struct Phase {
  Op op = Op::write;
  uint64_t bs = 4096;
  unsigned qd = 1;
  Pattern pattern = Pattern::rand;
  bool fua = false;
  uint64_t region = 0;         // bytes of the export to touch, from offset 0
  double warmup = 0;           // seconds not measured
  double seconds = 0;          // seconds measured (0: stop after stop_after_bytes)
  uint64_t stop_after_bytes = 0;
  bool trace = false;          // keep every measured request's start and latency
};

struct Result {
  uint64_t ops = 0;
  double elapsed = 0;               // seconds of the measured window
  std::vector<uint64_t> lat_ns;     // one entry per op completed in the window
  std::vector<std::pair<Clock::time_point, uint64_t>> trace;  // start, latency (ns)
};

struct Runner;

struct Slot {
  Runner* runner = nullptr;
  unsigned idx = 0;
  void* buf = nullptr;
  Clock::time_point start;
  Clock::time_point end;
  int error = 0;
};

int on_complete(void* user_data, int* error);

struct Runner {
  nbd_handle* h;
  Phase ph;
  std::vector<Slot> slots;
  std::vector<unsigned> done;  // slots completed since the last poll round
  std::vector<unsigned> batch;
  std::mt19937_64 rng{0x6e62646c6f6164};
  uint64_t next_seq = 0;
  uint64_t issued_bytes = 0;

  Runner(nbd_handle* handle, const Phase& phase) : h(handle), ph(phase), slots(phase.qd) {
    for (unsigned i = 0; i < ph.qd; ++i) {
      slots[i].runner = this;
      slots[i].idx = i;
      slots[i].buf = std::aligned_alloc(4096, ph.bs);
      if (slots[i].buf == nullptr) die("out of memory");
      // Incompressible, non-zero payload: no server can shortcut zero writes.
      auto* p = static_cast<uint64_t*>(slots[i].buf);
      for (uint64_t j = 0; j < ph.bs / 8; ++j) p[j] = rng() | 1;
    }
    done.reserve(ph.qd);
    batch.reserve(ph.qd);
  }
  ~Runner() {
    for (auto& s : slots) std::free(s.buf);
  }
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  uint64_t next_offset() {
    const uint64_t blocks = ph.region / ph.bs;
    if (ph.pattern == Pattern::rand) return (rng() % blocks) * ph.bs;
    const uint64_t off = next_seq;
    next_seq += ph.bs;
    if (next_seq + ph.bs > blocks * ph.bs) next_seq = 0;
    return off;
  }

  void issue(Slot& s) {
    const uint64_t off = next_offset();
    const nbd_completion_callback cb{.callback = on_complete, .user_data = &s, .free = nullptr};
    s.start = Clock::now();
    int64_t cookie;
    if (ph.op == Op::read) {
      cookie = nbd_aio_pread(h, s.buf, ph.bs, off, cb, 0);
    } else {
      cookie = nbd_aio_pwrite(h, s.buf, ph.bs, off, cb, ph.fua ? LIBNBD_CMD_FLAG_FUA : 0);
    }
    if (cookie == -1) die_nbd(ph.op == Op::read ? "nbd_aio_pread" : "nbd_aio_pwrite");
    issued_bytes += ph.bs;
  }

  bool may_issue(Clock::time_point now, Clock::time_point end) const {
    if (ph.stop_after_bytes != 0) return issued_bytes < ph.stop_after_bytes;
    return now < end;
  }

  Result run() {
    Result r;
    const auto t0 = Clock::now();
    auto to_tp = [&](double s) {
      return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    };
    const auto measure_start = to_tp(ph.warmup);
    const auto measure_end = to_tp(ph.warmup + ph.seconds);
    if (ph.seconds > 0) r.lat_ns.reserve(static_cast<size_t>(ph.seconds * 200000));

    unsigned in_flight = 0;
    for (auto& s : slots) {
      if (!may_issue(t0, measure_end)) break;
      issue(s);
      ++in_flight;
    }
    auto last_progress = t0;
    while (in_flight > 0) {
      if (done.empty() && nbd_poll(h, 1000) == -1) die_nbd("nbd_poll");
      const auto now = Clock::now();
      if (!done.empty()) {
        last_progress = now;
      } else if (now - last_progress > kStallLimit) {
        die("no reply from the server for 60 s");
      }
      // issue() may run libnbd's state machine and complete more commands, which
      // append to `done`: walk a private copy.
      batch.swap(done);
      for (unsigned idx : batch) {
        Slot& s = slots[idx];
        if (s.error != 0) {
          std::fprintf(stderr, "nbdload: %s failed: %s\n", ph.op == Op::read ? "read" : "write",
                       std::strerror(s.error));
          std::exit(1);
        }
        if (s.end >= measure_start && s.end < measure_end) {
          ++r.ops;
          r.lat_ns.push_back(static_cast<uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(s.end - s.start).count()));
          if (ph.trace) r.trace.emplace_back(s.start, r.lat_ns.back());
        }
        if (may_issue(now, measure_end)) {
          issue(s);
        } else {
          --in_flight;
        }
      }
      batch.clear();
    }
    r.elapsed = ph.seconds > 0
                    ? ph.seconds
                    : std::chrono::duration<double>(Clock::now() - t0).count();
    return r;
  }
};

int on_complete(void* user_data, int* error) {
  // Runs with the handle lock held: record only, never call nbd_* here.
  auto* s = static_cast<Slot*>(user_data);
  s->end = Clock::now();
  s->error = *error;
  s->runner->done.push_back(s->idx);
  return 1;  // auto-retire the command
}

double pct_us(const std::vector<uint64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1000.0;
}

void set_nodelay(nbd_handle* h) {
  const int fd = nbd_aio_get_fd(h);
  if (fd == -1) die_nbd("nbd_aio_get_fd");
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == -1) return;
  if (sa.ss_family != AF_INET && sa.ss_family != AF_INET6) return;
  const int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1)
    die("setsockopt(TCP_NODELAY) failed");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Closed-loop NBD load generator (libnbd aio); prints one JSON line"};
  std::string uri;
  std::string op_s = "write";
  std::string pattern_s = "rand";
  uint64_t bs = 4096;
  uint64_t size_limit = 0;
  unsigned qd = 1;
  bool fua = false;
  double seconds = 10;
  double warmup = 1;
  bool no_prefill = false;
  uint64_t seed = 1;
  std::string trace_file;

  app.add_option("--uri", uri, "nbd://HOST:PORT/NAME or nbd+unix:///NAME?socket=PATH")->required();
  app.add_option("--op", op_s, "read or write")->check(CLI::IsMember({"read", "write"}));
  app.add_option("--bs", bs, "request size (4k, 1M, ...)")->transform(CLI::AsSizeValue(false));
  app.add_option("--qd", qd, "requests kept in flight")->check(CLI::Range(1U, 4096U));
  app.add_option("--pattern", pattern_s, "rand or seq")->check(CLI::IsMember({"rand", "seq"}));
  app.add_flag("--fua", fua, "set NBD_CMD_FLAG_FUA on every write");
  app.add_option("--seconds", seconds, "measured duration")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "unmeasured seconds before the measurement")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--size-limit", size_limit, "bytes of the export to touch (default: all)")
      ->transform(CLI::AsSizeValue(false));
  app.add_flag("--no-prefill", no_prefill, "do not write the region before a read test");
  app.add_option("--seed", seed, "random offset seed");
  app.add_option("--trace", trace_file,
                 "write \"START_UNIX_US LATENCY_US\" per measured request to this file");
  CLI11_PARSE(app, argc, argv);

  Phase ph;
  ph.op = op_s == "read" ? Op::read : Op::write;
  ph.pattern = pattern_s == "seq" ? Pattern::seq : Pattern::rand;
  ph.bs = bs;
  ph.qd = qd;
  ph.fua = fua;
  ph.warmup = warmup;
  ph.seconds = seconds;
  ph.trace = !trace_file.empty();
  if (bs == 0 || bs % 512 != 0 || bs > (64u << 20)) die("--bs must be a multiple of 512, <= 64M");
  if (fua && ph.op == Op::read) die("--fua applies to writes only");

  nbd_handle* h = nbd_create();
  if (h == nullptr) die_nbd("nbd_create");
  if (nbd_connect_uri(h, uri.c_str()) == -1) die_nbd("nbd_connect_uri");
  set_nodelay(h);
  const int64_t size = nbd_get_size(h);
  if (size == -1) die_nbd("nbd_get_size");
  ph.region = size_limit != 0 ? size_limit : static_cast<uint64_t>(size);
  if (ph.region > static_cast<uint64_t>(size)) die("--size-limit is larger than the export");
  if (ph.region < bs) die("region is smaller than one request");
  ph.region -= ph.region % bs;
  if (fua && nbd_can_fua(h) != 1) die("server does not advertise FUA");
  if (ph.op == Op::write && nbd_is_read_only(h) == 1) die("export is read-only");

  if (ph.op == Op::read && !no_prefill && nbd_is_read_only(h) == 1) {
    std::fprintf(stderr, "nbdload: read-only export: not pre-filled\n");
    no_prefill = true;
  }
  if (ph.op == Op::read && !no_prefill) {
    Phase fill;
    fill.op = Op::write;
    fill.pattern = Pattern::seq;
    fill.bs = ph.region % (1u << 20) == 0 ? 1u << 20 : ph.bs;
    fill.qd = 8;
    fill.region = ph.region;
    fill.stop_after_bytes = ph.region;
    Runner(h, fill).run();
  }
  // Start from a clean server: whatever earlier runs left dirty in a writeback
  // server's page cache is written out here, not inside the measured window.
  const auto flush_start = Clock::now();
  if (nbd_can_flush(h) == 1 && nbd_flush(h, 0) == -1) die_nbd("nbd_flush");
  const double flush_ms = std::chrono::duration<double, std::milli>(Clock::now() - flush_start).count();

  Runner runner(h, ph);
  runner.rng.seed(seed);
  Result r = runner.run();
  if (ph.trace) {
    // Steady-clock starts to wall-clock microseconds, through one pair of
    // readings taken now.
    const auto steady_now = Clock::now();
    const int64_t unix_now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
    std::FILE* f = std::fopen(trace_file.c_str(), "w");
    if (f == nullptr) die("cannot write the --trace file");
    for (const auto& [start, ns] : r.trace) {
      int64_t ago_us =
          std::chrono::duration_cast<std::chrono::microseconds>(steady_now - start).count();
      std::fprintf(f, "%" PRId64 " %.1f\n", unix_now_us - ago_us, static_cast<double>(ns) / 1000.0);
    }
    if (std::fclose(f) != 0) die("cannot write the --trace file");
  }
  std::sort(r.lat_ns.begin(), r.lat_ns.end());
  double sum = 0;
  for (uint64_t v : r.lat_ns) sum += static_cast<double>(v);
  const double iops = static_cast<double>(r.ops) / r.elapsed;
  const double mean_us = r.lat_ns.empty() ? 0 : sum / static_cast<double>(r.lat_ns.size()) / 1000.0;
  const double max_us = r.lat_ns.empty() ? 0 : static_cast<double>(r.lat_ns.back()) / 1000.0;

  // Leave nothing dirty behind for the next run (or another server's run).
  const auto post_start = Clock::now();
  if (nbd_can_flush(h) == 1 && nbd_flush(h, 0) == -1) die_nbd("nbd_flush");
  const double post_flush_ms = std::chrono::duration<double, std::milli>(Clock::now() - post_start).count();

  if (nbd_shutdown(h, 0) == -1) die_nbd("nbd_shutdown");
  nbd_close(h);

  std::printf(
      "{\"op\":\"%s\",\"bs\":%" PRIu64 ",\"qd\":%u,\"pattern\":\"%s\",\"fua\":%s,"
      "\"seconds\":%.3f,\"ops\":%" PRIu64 ",\"iops\":%.1f,\"mb_s\":%.1f,\"mean_us\":%.1f,"
      "\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"pre_flush_ms\":%.1f,\"post_flush_ms\":%.1f}\n",
      op_s.c_str(), bs, qd, pattern_s.c_str(), fua ? "true" : "false", r.elapsed, r.ops, iops,
      iops * static_cast<double>(bs) / 1e6, mean_us, pct_us(r.lat_ns, 0.50),
      pct_us(r.lat_ns, 0.99), pct_us(r.lat_ns, 0.999), max_us, flush_ms, post_flush_ms);
  return 0;
}
