// libFuzzer target for the safetensors reader. Any input must either parse or
// throw an lqer::error; anything else — another exception, a crash, a sanitizer
// report, a huge allocation (libFuzzer's -malloc_limit_mb) or a hang — is a bug.
// What parses is then used the way a loader would (lookup by name, typed views
// and copies, float conversion, checksums) and must survive a round trip
// through the writer: safetensors_writer re-encodes every tensor and the
// metadata, and reading that back gives the same names, dtypes, shapes, bytes
// and metadata — which also checks the writer's JSON escaping against the
// reader's decoding on every name and string the fuzzer invents.
//
// Seeds: tests/fuzz/corpus/safetensors (tests/fuzz/make_safetensors_corpus.py;
// test_safetensors checks that every valid_* seed parses and every bad_* seed
// is refused). Dictionary: tests/fuzz/safetensors.dict.
//   ./fuzz_safetensors -max_total_time=60 -dict=tests/fuzz/safetensors.dict corpus_dir tests/fuzz/corpus/safetensors
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "lqer/error.hpp"
#include "lqer/io/safetensors.hpp"
#include "lqer/io/sha256.hpp"

namespace {

/// Typed access of whatever type the tensor holds: may refuse (misaligned data,
/// a BOOL byte above 1) with a typed error, never crash.
template <class T>
void touch_as(const lqer::io::safetensors_tensor& t) {
  try {
    const std::vector<T> v = t.to_vector<T>();
    if (v.size() != static_cast<std::size_t>(t.n_elements)) std::abort();
    if constexpr (!std::is_same_v<T, bool>) {
      const auto s = t.as_span<T>();
      if (s.size() != v.size()) std::abort();
    }
  } catch (const lqer::value_error&) {
  } catch (const lqer::unsupported_error&) {
  }
}

void touch(const lqer::io::safetensors_tensor& t) {
  using lqer::io::safetensors_dtype;
  switch (t.dtype) {
    case safetensors_dtype::f32: touch_as<float>(t); break;
    case safetensors_dtype::f64: touch_as<double>(t); break;
    case safetensors_dtype::f16: touch_as<lqer::half_bits>(t); break;
    case safetensors_dtype::i64: touch_as<std::int64_t>(t); break;
    case safetensors_dtype::u16: touch_as<std::uint16_t>(t); break;
    case safetensors_dtype::boolean: touch_as<bool>(t); break;
    case safetensors_dtype::f8_e8m0: touch_as<lqer::e8m0>(t); break;
    default: break;
  }
  if (t.dtype == safetensors_dtype::f32 || t.dtype == safetensors_dtype::f16 || t.dtype == safetensors_dtype::bf16 ||
      t.dtype == safetensors_dtype::f64) {
    if (lqer::io::to_float32(t).size() != static_cast<std::size_t>(t.n_elements)) std::abort();
  }
  if (lqer::io::sha256_hex(t.data).size() != 64) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* p = reinterpret_cast<const std::byte*>(data);
  lqer::io::safetensors_file f;
  try {
    f = lqer::io::safetensors_file::from_bytes(std::vector<std::byte>(p, p + size), "fuzz.safetensors");
  } catch (const lqer::error&) {
    return 0;  // rejected with a typed error: the expected outcome for most inputs
  }
  const auto all = f.bytes();
  bool empty_name = false;
  for (const auto& t : f.tensors()) {
    if (f.find_tensor(t.name) != &t) std::abort();
    if (t.data.size() != t.end - t.begin) std::abort();
    if (t.data.data() != all.data() + t.offset || t.offset + t.data.size() > all.size()) std::abort();
    if (t.offset < f.data_offset()) std::abort();
    empty_name = empty_name || t.name.empty();
    touch(t);
  }

  // The writer refuses an empty name (the reader, like Hugging Face's, accepts one).
  if (empty_name) return 0;
  lqer::io::safetensors_writer w;
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  for (const auto& t : f.tensors()) w.add(t.name, t.dtype, t.shape, t.data);
  const lqer::io::safetensors_file g = lqer::io::safetensors_file::from_bytes(w.encode(), "fuzz-roundtrip.safetensors");
  if (g.metadata() != f.metadata() || g.tensors().size() != f.tensors().size()) std::abort();
  for (const auto& t : f.tensors()) {
    const lqer::io::safetensors_tensor* u = g.find_tensor(t.name);
    if (u == nullptr || u->dtype != t.dtype || u->shape != t.shape || u->data.size() != t.data.size()) std::abort();
    if (!t.data.empty() && std::memcmp(u->data.data(), t.data.data(), t.data.size()) != 0) std::abort();
  }
  return 0;
}
