#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cstdlib>
#include <vector>

#include "wire.h"

namespace mirror {

namespace {
void fill_random(uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t r = getrandom(p, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      std::abort();  // no entropy means no safe nonce: never continue without
    }
    p += r;
    n -= r;
  }
}
}  // namespace

Nonce random_nonce() {
  Nonce n;
  fill_random(n.data(), n.size());
  return n;
}

uint64_t random_id() {
  uint64_t v = 0;
  while (v == 0) fill_random(reinterpret_cast<uint8_t*>(&v), sizeof v);
  return v;
}

Mac link_mac(std::string_view secret, std::string_view sender, std::string_view receiver,
             std::string_view volume, uint64_t size, std::span<const uint8_t> sender_nonce,
             std::span<const uint8_t> receiver_nonce) {
  // Length-prefixed fields, so no two inputs serialise the same way.
  std::vector<uint8_t> msg;
  wire::Writer w(msg);
  w.str("mirrord-link-auth-v1");
  for (std::string_view s : {sender, receiver, volume}) w.u16(uint16_t(s.size())).str(s);
  w.u64(size).bytes(sender_nonce).bytes(receiver_nonce);
  Mac mac{};
  unsigned len = 0;
  HMAC(EVP_sha256(), secret.data(), int(secret.size()), msg.data(), msg.size(), mac.data(), &len);
  return mac;
}

bool mac_equal(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace mirror
