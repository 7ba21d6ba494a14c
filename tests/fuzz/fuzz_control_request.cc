// Fuzzes the control protocol's request parser (daemon/control_protocol.h)
// with arbitrary lines: it must never throw or crash, and whatever it accepts
// names a known command whose arguments validate.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "control_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  try {
    auto r = mirror::control::parse_request(line);
    if (r) {
      if (!r->spec || !mirror::control::validate_args(*r->spec, r->args).ok()) std::abort();
      (void)mirror::control::ok_reply(r->args).dump();
    } else {
      (void)mirror::control::error_reply(r.error().code, r.error().message).dump();
    }
  } catch (...) {
    std::abort();  // no exception may cross the daemon's event loop
  }
  return 0;
}
