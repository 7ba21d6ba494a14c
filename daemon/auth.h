// Mutual authentication of the replication link: each side proves it knows
// the volume's shared secret by an HMAC-SHA-256 over both nonces, both node
// names and the volume identity. The secret never crosses the wire, a MAC is
// bound to its direction (sender, receiver), so it cannot be reflected, and
// fresh nonces on both sides defeat replay.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "link_codec.h"

namespace mirror {

using Nonce = std::array<uint8_t, link::kNonceSize>;
using Mac = std::array<uint8_t, link::kMacSize>;

Nonce random_nonce();
// A random, non-zero 64-bit identifier (generation ids).
uint64_t random_id();

Mac link_mac(std::string_view secret, std::string_view sender, std::string_view receiver,
             std::string_view volume, uint64_t size, std::span<const uint8_t> sender_nonce,
             std::span<const uint8_t> receiver_nonce);

// Constant-time comparison.
bool mac_equal(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace mirror
