// libFuzzer target for the GGUF reader. Any input must either parse or throw an
// lqer::error; anything else — another exception, a crash, a sanitizer report,
// a huge allocation (libFuzzer's -malloc_limit_mb) or a hang — is a bug. What
// parses is then used the way an engine would: every metadata value read
// through the typed getters (which may refuse with value_error, never crash),
// every decodable tensor decoded, and every Q4_0 / Q4_1 / Q8_0 tensor moved into
// lqer's quantized_matrix, whose dequantization must equal the GGUF decode bit
// for bit (to_quantized_matrix refuses non-finite scales and minima, so no NaN is
// compared).
//
// Seeds: tests/fuzz/corpus/gguf (tests/fuzz/make_gguf_corpus.py; test_gguf
// checks that every valid_* seed parses and every bad_* seed is refused).
//   ./fuzz_gguf -max_total_time=60 corpus_dir tests/fuzz/corpus/gguf
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "lqer/error.hpp"
#include "lqer/io/gguf.hpp"

namespace {

void touch(const lqer::io::gguf_value& v) {
  try {
    switch (v.type()) {
      case lqer::io::gguf_type::string: (void)v.as<std::string_view>(); break;
      case lqer::io::gguf_type::boolean: (void)v.as<bool>(); break;
      case lqer::io::gguf_type::float32: (void)v.as<float>(); break;
      case lqer::io::gguf_type::float64: (void)v.as<double>(); break;
      case lqer::io::gguf_type::array:
        if (v.element_type() == lqer::io::gguf_type::string)
          (void)v.strings();
        else if (v.element_type() == lqer::io::gguf_type::array)
          for (const auto& e : v.elements()) touch(e);
        else if (v.element_type() == lqer::io::gguf_type::float32)
          (void)v.as_vector<float>();
        else
          (void)v.as_vector<std::int64_t>();  // may not fit: value_error
        break;
      default:
        (void)v.as<std::int64_t>();
        (void)v.as<std::uint32_t>();
        break;
    }
  } catch (const lqer::value_error&) {
    // a value that does not convert: refused with a typed error, as it should be
  }
}

template <class Format>
void check_quantized(const lqer::io::gguf_tensor& t, const std::vector<float>& decoded) {
  try {
    const std::vector<float> q = lqer::io::to_quantized_matrix<Format>(t).dequantize();
    if (q.size() != decoded.size()) std::abort();
    for (std::size_t i = 0; i < q.size(); ++i)
      if (std::bit_cast<std::uint32_t>(q[i]) != std::bit_cast<std::uint32_t>(decoded[i])) std::abort();
  } catch (const lqer::value_error&) {
    // a non-finite scale or a Q8_0 code of -128: refused
  } catch (const lqer::shape_error&) {
    // no elements
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* p = reinterpret_cast<const std::byte*>(data);
  lqer::io::gguf_file f;
  try {
    f = lqer::io::gguf_file::from_bytes(std::vector<std::byte>(p, p + size), "fuzz.gguf");
  } catch (const lqer::error&) {
    return 0;  // rejected with a typed error: the expected outcome for most inputs
  }
  for (const auto& e : f.metadata().entries()) {
    if (f.metadata().find(e.key) != &e.value) std::abort();
    touch(e.value);
  }
  for (const auto& t : f.tensors()) {
    if (f.find_tensor(t.name) != &t) std::abort();
    if (t.data.size() != t.n_bytes) std::abort();
    if (!lqer::ggml_traits(t.type).decodable) continue;
    const std::vector<float> decoded = lqer::io::dequantize(t);
    if (t.type == lqer::ggml_type::q4_0) check_quantized<lqer::q4_0>(t, decoded);
    if (t.type == lqer::ggml_type::q4_1) check_quantized<lqer::q4_1>(t, decoded);
    if (t.type == lqer::ggml_type::q8_0) check_quantized<lqer::q8_0>(t, decoded);
  }
  return 0;
}
