// libFuzzer target for the USE-lite example's TF.js weight reader
// (examples/use_lite/tfjs_weights.hpp): model.json parsing, the size checks
// and the binding of the weights to their blob.
//
// Input: a 4-byte little-endian length n, then n bytes of model.json text,
// then the blob (all shards concatenated). Any input must either load or throw
// an lqer::error; anything else — another exception (nlohmann's own escaping
// untranslated), a crash, a sanitizer report, an allocation beyond what the
// input itself holds (libFuzzer's -malloc_limit_mb) — is a bug. What loads
// must be consistent: entries tile the blob exactly, and every float32 entry
// reads back at its own shape.
//
// Needs nlohmann-json's header (/usr/include, no library to link).
// Seeds: tests/fuzz/corpus/tfjs_model (hand-made; one valid model with two
// groups, one with an empty tensor, one with scalars; and the hostile ones of
// issue #19: a shape nested 10,000 arrays deep — the error message once
// dumped it recursively, a stack overflow at 200,000 — a shallow nested
// shape, and a modelTopology 100 objects deep, both refused by the depth limit
// or the shape check).
//   ./fuzz_tfjs_model -max_total_time=60 -malloc_limit_mb=256 corpus_dir tests/fuzz/corpus/tfjs_model
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "../../examples/use_lite/tfjs_weights.hpp"
#include "lqer/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  std::uint32_t n = 0;
  std::memcpy(&n, data, 4);
  const std::size_t json_len = std::min<std::size_t>(n, size - 4);
  const std::string_view json(reinterpret_cast<const char*>(data + 4), json_len);
  std::vector<std::byte> blob(reinterpret_cast<const std::byte*>(data + 4 + json_len),
                              reinterpret_cast<const std::byte*>(data + size));

  // Small limits, so that a manifest the reader accepts can never make it
  // allocate much more than the input holds.
  use_lite::tfjs_limits limits;
  limits.max_total_bytes = 1u << 20;
  limits.max_entries = 4096;
  limits.max_shards = 64;

  use_lite::tfjs_weights w;
  try {
    w = use_lite::tfjs_weights::from_memory(use_lite::parse_tfjs_manifest(json, "fuzz/model.json", limits),
                                            std::move(blob), "fuzz/model.json");
  } catch (const lqer::error&) {
    return 0;  // rejected with a typed error: the expected outcome for most inputs
  }

  // Accepted: entries lie back to back and cover the blob exactly.
  std::uint64_t offset = 0;
  for (const auto& e : w.manifest().entries) {
    if (e.offset != offset || e.bytes != 4 * e.elements) std::abort();
    offset += e.bytes;
    if (e.dtype == use_lite::tfjs_dtype::float32 && w.entry(e.name).offset == e.offset) {
      try {
        const auto v = w.floats(e.name, e.shape);
        if (v.size() != e.elements) std::abort();
      } catch (const lqer::parse_error&) {
        // a NaN/Inf element: refused by design
      }
    }
  }
  if (offset != w.manifest().total_bytes) std::abort();
  return 0;
}
