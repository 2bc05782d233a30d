// libFuzzer target for lqer's own safetensors schemas: any input is opened as
// an LQER checkpoint (io/checkpoint.hpp) and as a calibration statistics file
// (activation_stats::load). Each must either succeed or throw an lqer::error;
// anything else — another exception, a crash, a sanitizer report, a huge
// allocation (libFuzzer's -malloc_limit_mb) or a hang — is a bug.
//
// What loads is then used as a program would, and must be consistent:
//  * checkpoint: every layer is loaded in each format type whose name it
//    records (the file's formats among the ones instantiated here); a layer
//    that loads is valid (lqer_layer::validate), matches its untyped
//    description, and survives a round trip through checkpoint_writer with
//    the same codes and scales; every tensor's checksum is computed.
//  * statistics: the accumulator's statistics are read, it is re-encoded and
//    loaded again (the same file bytes), and merged with itself.
//
// Seeds: tests/fuzz/corpus/checkpoint (tests/fuzz/make_checkpoint_corpus.py, an
// independent writer of docs/checkpoint.md; test_checkpoint checks that every
// valid_* seed loads and every bad_* seed is refused). Dictionary:
// tests/fuzz/checkpoint.dict.
//   ./fuzz_checkpoint -max_total_time=60 -dict=tests/fuzz/checkpoint.dict corpus_dir tests/fuzz/corpus/checkpoint
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "lqer/calib/activation_stats.hpp"
#include "lqer/error.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/format/mxint.hpp"
#include "lqer/io/checkpoint.hpp"

namespace {

[[noreturn]] void fail() { std::abort(); }

template <class F>
void same_matrix(const lqer::quantized_matrix<F>& a, const lqer::quantized_matrix<F>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols() || a.axis() != b.axis()) fail();
  if (!std::equal(a.codes().begin(), a.codes().end(), b.codes().begin(), b.codes().end())) fail();
  if (!std::equal(a.scales().begin(), a.scales().end(), b.scales().begin(), b.scales().end())) fail();
}

/// Loads layer `info` as <W, Lr> when those are its formats; checks what loads.
template <class W, class Lr>
void try_load(const lqer::io::checkpoint_file& f, const lqer::io::checkpoint_layer& info) {
  if (info.weight_format != W::name() || info.lowrank_format != Lr::name()) {
    // Another type than the file's: always refused, with a typed error.
    try {
      (void)f.load<W, Lr>(info.name);
    } catch (const lqer::value_error&) {
      return;
    }
    fail();
  }
  lqer::lqer_layer<W, Lr> l;
  try {
    l = f.load<W, Lr>(info.name);
  } catch (const lqer::error&) {
    return;  // the layer's data is bad: refused with a typed error
  }
  l.validate();
  if (l.out_features() != info.out_features || l.in_features() != info.in_features || l.rank() != info.rank ||
      l.has_bias() != info.has_bias)
    fail();
  if (l.storage_bytes() != info.weight_bytes + info.lowrank_bytes + info.bias_bytes) fail();
  // Written again and read back: the same layer.
  lqer::io::checkpoint_writer w;
  w.add(info.name, l, {info.policy, info.solver});
  const auto g = lqer::io::checkpoint_file::from_bytes(w.encode(), "fuzz-roundtrip.safetensors");
  const auto back = g.load<W, Lr>(info.name);
  same_matrix(back.wq, l.wq);
  if (l.rank() > 0) {
    same_matrix(back.a, l.a);
    same_matrix(back.b, l.b);
  }
  if (back.bias != l.bias) fail();
}

void as_checkpoint(const std::vector<std::byte>& bytes) {
  using mx4 = lqer::mxint<4, 16, lqer::mx_rule::lqer>;
  using mx8 = lqer::mxint<8, 16, lqer::mx_rule::lqer>;
  using asym4 = lqer::intq<4, 32, lqer::int_scheme::asymmetric, lqer::scale_dtype::f16>;
  lqer::io::checkpoint_file f;
  try {
    f = lqer::io::checkpoint_file::from_bytes(bytes, "fuzz.safetensors");
  } catch (const lqer::error&) {
    return;
  }
  for (const auto& info : f.layers()) {
    if (info.name.empty() || info.out_features < 1 || info.in_features < 1 || info.rank < 0) fail();
    if (!(info.bits_per_weight() >= 0)) fail();
    try_load<mx4, mx8>(f, info);
    try_load<lqer::q4_0, lqer::q8_0>(f, info);
    try_load<asym4, mx8>(f, info);
  }
  for (const auto& c : f.checksums())
    if (c.actual.size() != 64) fail();
  for (const auto& t : f.file().tensors()) {
    try {
      (void)f.tensor(t.name);
    } catch (const lqer::parse_error&) {
    }
  }
}

void as_stats(const std::vector<std::byte>& bytes) {
  lqer::activation_stats s;
  try {
    s = lqer::activation_stats::load(lqer::io::safetensors_file::from_bytes(bytes, "fuzz-stats.safetensors"));
  } catch (const lqer::error&) {
    return;
  }
  if (s.in_features() < 1 || s.tokens() < s.batches()) fail();
  if (!s.empty()) {
    if (s.mean_abs().size() != static_cast<std::size_t>(s.in_features())) fail();
    (void)s.mean_square();
    (void)s.rms();
    (void)s.batch_mean_abs_max();
    if (s.has_gram() && s.gram().rows() != s.in_features()) fail();
  }
  const std::vector<std::byte> again = s.encode();
  const auto t = lqer::activation_stats::load(lqer::io::safetensors_file::from_bytes(again, "fuzz-stats-2"));
  if (t.encode() != again) fail();
  try {
    s.merge(t);
  } catch (const lqer::value_error&) {
    return;  // counts near 2^63 from the file: the sum would overflow
  }
  if (s.tokens() / 2 != t.tokens() || s.batches() != t.batches() * 2) fail();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* p = reinterpret_cast<const std::byte*>(data);
  const std::vector<std::byte> bytes(p, p + size);
  as_checkpoint(bytes);
  as_stats(bytes);
  return 0;
}
