// libFuzzer target for the .npy reader. Any input must either parse or throw
// an lqer::error; anything else — another exception, a crash, a sanitizer
// report, a huge allocation (libFuzzer's -rss_limit_mb / -malloc_limit_mb) —
// is a bug. What parses must also survive a round trip through the writer:
// encode_npy(parse_npy(x)) parses back to the same array.
//
// Seeds: tests/fuzz/corpus/npy holds a few small files of every dtype and
// format version (hand-made; test_npy checks that each of them parses).
//   ./fuzz_npy -max_total_time=60 corpus_dir tests/fuzz/corpus/npy
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "lqer/error.hpp"
#include "lqer/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
  lqer::io::npy_array a;
  try {
    a = lqer::io::parse_npy(file, "fuzz.npy");
  } catch (const lqer::error&) {
    return 0;  // rejected with a typed error: the expected outcome for most inputs
  }
  // Accepted: the writer must encode it and the reader must read that back unchanged.
  const std::vector<std::byte> encoded = lqer::io::encode_npy(a);
  const lqer::io::npy_array b = lqer::io::parse_npy(encoded, "fuzz-roundtrip.npy");
  if (b.dtype != a.dtype || b.shape != a.shape || b.bytes != a.bytes) std::abort();
  return 0;
}
