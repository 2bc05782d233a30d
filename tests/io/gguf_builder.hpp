// Test support: GGUF files built byte by byte, without lqer::io, so that the
// reader is tested against the format rather than against itself. Valid by
// default (magic, version 3, counts, metadata, tensor infos, padding to the
// alignment, data); tests that need a broken file set a field to a hostile
// value or cut and patch the bytes build() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace lqer::test {

class gguf_builder {
 public:
  std::uint32_t version = 3;
  std::uint32_t alignment = 32;  ///< where build() pads the data section and places tensors
  /// Overrides of the header counts (otherwise the number of entries added).
  std::int64_t kv_count_override = -1, tensor_count_override = -1;

  // --- raw little-endian encoders -------------------------------------------
  template <class T>
  static void put(std::vector<std::byte>& out, T v) {
    // resize + memcpy rather than insert of a local array: GCC 12 warns falsely
    // (-Wstringop-overflow, "writing 4 bytes into a region of size 0") on the latter.
    const std::size_t n = out.size();
    out.resize(n + sizeof(T));
    std::memcpy(out.data() + n, &v, sizeof(T));
  }
  static void put_string(std::vector<std::byte>& out, std::string_view s) {
    put<std::uint64_t>(out, s.size());
    for (const char c : s) out.push_back(static_cast<std::byte>(c));
  }

  // --- metadata ---------------------------------------------------------------
  /// A key with a type tag and an already encoded value.
  gguf_builder& kv_raw(std::string_view key, std::uint32_t type, const std::vector<std::byte>& value) {
    put_string(kv_, key);
    put<std::uint32_t>(kv_, type);
    kv_.insert(kv_.end(), value.begin(), value.end());
    ++n_kv_;
    return *this;
  }
  template <class T>
  gguf_builder& kv(std::string_view key, std::uint32_t type, T v) {
    std::vector<std::byte> b;
    put<T>(b, v);
    return kv_raw(key, type, b);
  }
  gguf_builder& kv_u32(std::string_view key, std::uint32_t v) { return kv(key, 4, v); }
  gguf_builder& kv_string(std::string_view key, std::string_view s) {
    std::vector<std::byte> b;
    put_string(b, s);
    return kv_raw(key, 8, b);
  }

  // --- tensors ----------------------------------------------------------------
  /// A tensor whose data is `payload`, placed at the next aligned offset.
  gguf_builder& tensor(std::string_view name, std::uint32_t type, std::initializer_list<std::uint64_t> dims,
                       const std::vector<std::byte>& payload) {
    while (data_.size() % alignment != 0) data_.push_back(std::byte{0});
    const std::uint64_t offset = data_.size();
    data_.insert(data_.end(), payload.begin(), payload.end());
    return tensor_info(name, type, dims, offset);
  }
  /// A tensor info alone, with any offset (the data is the test's business).
  gguf_builder& tensor_info(std::string_view name, std::uint32_t type, std::initializer_list<std::uint64_t> dims,
                            std::uint64_t offset) {
    put_string(infos_, name);
    put<std::uint32_t>(infos_, static_cast<std::uint32_t>(dims.size()));
    for (const std::uint64_t d : dims) put<std::uint64_t>(infos_, d);
    put<std::uint32_t>(infos_, type);
    put<std::uint64_t>(infos_, offset);
    ++n_tensors_;
    return *this;
  }
  /// Raw bytes appended to the data section (e.g. to make room after a tensor).
  gguf_builder& data_bytes(std::size_t n, std::byte fill = std::byte{0}) {
    data_.insert(data_.end(), n, fill);
    return *this;
  }

  /// Byte offset where the tensor infos start in build()'s output.
  std::size_t infos_offset() const { return 24 + kv_.size(); }

  std::vector<std::byte> build() const {
    // One allocation, every part copied into place: GCC 12 warns falsely
    // (-Wstringop-overflow, -Warray-bounds) on the growth paths of push_back and
    // insert once they are inlined into this function.
    const std::size_t head = 24 + kv_.size() + infos_.size();
    const std::size_t data_at = n_tensors_ != 0 ? (head + alignment - 1) / alignment * alignment : head;
    std::vector<std::byte> out(data_at + (n_tensors_ != 0 ? data_.size() : 0));
    const std::uint64_t tensors =
        tensor_count_override >= 0 ? static_cast<std::uint64_t>(tensor_count_override) : n_tensors_;
    const std::uint64_t kvs = kv_count_override >= 0 ? static_cast<std::uint64_t>(kv_count_override) : n_kv_;
    std::memcpy(out.data(), "GGUF", 4);
    std::memcpy(out.data() + 4, &version, 4);
    std::memcpy(out.data() + 8, &tensors, 8);
    std::memcpy(out.data() + 16, &kvs, 8);
    if (!kv_.empty()) std::memcpy(out.data() + 24, kv_.data(), kv_.size());
    if (!infos_.empty()) std::memcpy(out.data() + 24 + kv_.size(), infos_.data(), infos_.size());
    if (n_tensors_ != 0 && !data_.empty()) std::memcpy(out.data() + data_at, data_.data(), data_.size());
    return out;
  }

 private:
  std::vector<std::byte> kv_, infos_, data_;
  std::uint64_t n_kv_ = 0, n_tensors_ = 0;
};

/// Bytes of a string (for payloads and patches).
inline std::vector<std::byte> as_bytes(std::string_view s) {
  std::vector<std::byte> b;
  for (const char c : s) b.push_back(static_cast<std::byte>(c));
  return b;
}

/// Float32 values' bytes.
inline std::vector<std::byte> f32_bytes(std::initializer_list<float> v) {
  std::vector<std::byte> b;
  for (const float f : v) gguf_builder::put<float>(b, f);
  return b;
}

}  // namespace lqer::test
