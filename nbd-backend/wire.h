// Big-endian (network order) encoding helpers for wire formats. Values are
// always encoded and decoded field by field: never cast a struct onto a buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace mirror::wire {

inline uint16_t get_u16(const uint8_t* p) { return uint16_t(p[0]) << 8 | p[1]; }
inline uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline uint64_t get_u64(const uint8_t* p) { return uint64_t(get_u32(p)) << 32 | get_u32(p + 4); }

inline void put_u16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = uint8_t(v);
}
inline void put_u64(uint8_t* p, uint64_t v) {
  put_u32(p, uint32_t(v >> 32));
  put_u32(p + 4, uint32_t(v));
}

// Appends big-endian fields to a byte vector.
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  Writer& u8(uint8_t v) {
    out_.push_back(v);
    return *this;
  }
  Writer& u16(uint16_t v) { return put(v, 2); }
  Writer& u32(uint32_t v) { return put(v, 4); }
  Writer& u64(uint64_t v) { return put(v, 8); }
  Writer& bytes(std::span<const uint8_t> b) {
    out_.insert(out_.end(), b.begin(), b.end());
    return *this;
  }
  Writer& str(std::string_view s) {
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  Writer& zeroes(size_t n) {
    out_.insert(out_.end(), n, 0);
    return *this;
  }
  size_t size() const { return out_.size(); }

 private:
  Writer& put(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) out_.push_back(uint8_t(v >> (8 * i)));
    return *this;
  }
  std::vector<uint8_t>& out_;
};

// Reads big-endian fields from a span; any read past the end sets failed()
// and returns zeroes, so a parser checks once at the end.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  uint8_t u8() { return take(1) ? in_[pos_ - 1] : 0; }
  uint16_t u16() { return take(2) ? get_u16(&in_[pos_ - 2]) : 0; }
  uint32_t u32() { return take(4) ? get_u32(&in_[pos_ - 4]) : 0; }
  uint64_t u64() { return take(8) ? get_u64(&in_[pos_ - 8]) : 0; }
  std::string_view str(size_t n) {
    if (!take(n)) return {};
    return {reinterpret_cast<const char*>(in_.data() + pos_ - n), n};
  }
  std::span<const uint8_t> bytes(size_t n) {
    if (!take(n)) return {};
    return in_.subspan(pos_ - n, n);
  }
  size_t remaining() const { return in_.size() - pos_; }
  bool failed() const { return failed_; }

 private:
  bool take(size_t n) {
    if (failed_ || n > in_.size() - pos_) {
      failed_ = true;
      return false;
    }
    pos_ += n;
    return true;
  }
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool failed_ = false;
};

}  // namespace mirror::wire
