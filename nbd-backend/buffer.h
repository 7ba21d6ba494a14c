// Buffer: an owned, 4 KiB-aligned, uninitialised byte buffer (I/O payloads;
// aligned so the same buffers work with O_DIRECT).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

namespace mirror {

class Buffer {
 public:
  static constexpr size_t kAlign = 4096;
  Buffer() = default;
  explicit Buffer(size_t n) { reserve(n); }
  Buffer(Buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), cap_(std::exchange(o.cap_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(cap_, o.cap_);
    return *this;
  }
  ~Buffer() { std::free(data_); }

  // Ensures capacity >= n; contents are not preserved.
  void reserve(size_t n) {
    if (n <= cap_) return;
    std::free(data_);
    size_t rounded = (n + kAlign - 1) / kAlign * kAlign;
    data_ = static_cast<uint8_t*>(std::aligned_alloc(kAlign, rounded));
    if (!data_) throw std::bad_alloc();
    cap_ = rounded;
  }
  void release() {
    std::free(data_);
    data_ = nullptr;
    cap_ = 0;
  }
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t capacity() const { return cap_; }

 private:
  uint8_t* data_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace mirror
