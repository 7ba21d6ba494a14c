// CRC-32C (Castagnoli), the checksum of the bitmap metadata file. Software,
// table driven (slicing by 8); pure functions, safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mirror {

// CRC-32C of n bytes: reflected polynomial 0x82F63B78, initial value and
// final xor 0xFFFFFFFF. crc32c("123456789", 9) == 0xE3069283.
uint32_t crc32c(const void* data, size_t n);

// Continues a CRC: crc32c_extend(crc32c(a), b) == crc32c(a || b), and
// crc32c_extend(0, x) == crc32c(x).
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);

}  // namespace mirror
