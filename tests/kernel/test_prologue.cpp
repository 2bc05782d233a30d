// The prologue: every path's vectorized activation quantizer against the
// scalar one, which calls ActFormat::quantize_block itself — codes, block
// records and exponent ranges must be identical, on random, tie, subnormal,
// huge, power-of-two and signed-zero data, for both MX rules and blocks 8/16/32,
// on rows of whole groups of 16 blocks, partial groups and partial blocks.
#include <doctest/doctest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernel_test_util.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/format/mxint.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/prologue.hpp"

using namespace lqer;
using namespace lqer::detail;
using namespace lqer_test;

namespace {

struct prologue_out {
  act_panel_layout lay;
  std::vector<std::uint8_t> panel;
  std::vector<row_status> status;
};

/// Quantizes x (rows × cols) into a panel with row groups of 2 (so a last,
/// partial group appears whenever rows is odd) and two consumers.
template <class Act, class Isa>
prologue_out run_prologue(const std::vector<float>& x, index_t rows, index_t cols, bool real = false) {
  constexpr int B = Act::kBlock;
  prologue_out o;
  o.lay = act_panel_layout{rows, 2, B, (cols + B - 1) / B, 2};
  o.panel.assign(static_cast<std::size_t>(o.lay.bytes()), std::uint8_t{99});
  o.status.resize(static_cast<std::size_t>(rows));
  const act_consumer cons[2] = {{8, 3, real}, {128, 7, real}};
  Isa::template quantize_rows<Act>(x.data(), cols, cols, 0, rows, o.lay, o.panel.data(), cons, o.status.data());
  return o;
}

bool same_meta(const act_block_meta& a, const act_block_meta& b) {
  return a.magic_init == b.magic_init && a.magic_c == b.magic_c;
}

template <class Act>
void compare_paths(const std::vector<float>& x, index_t rows, index_t cols, const char* what) {
  // Records for magic/exact-mode consumers and for real-mode ones (a layer
  // with a real scale elsewhere: act_block_meta::real).
  for (bool real : {false, true}) {
    auto want = run_prologue<Act, generic_isa>(x, rows, cols, real);
    for (kernel_path path : paths_to_test()) {
      with_isa(path, [&](auto isa) {
        using Isa = decltype(isa);
        auto got = run_prologue<Act, Isa>(x, rows, cols, real);
        INFO(what << " " << Act::name() << " path=" << std::string(to_string(path)) << " cols=" << cols
                  << " real=" << real);
        for (index_t r = 0; r < rows; ++r) {
          INFO("row " << r);
          REQUIRE(got.status[r].bad_col == want.status[r].bad_col);
          REQUIRE(got.status[r].bad_scale == want.status[r].bad_scale);
          if (want.status[r].bad_col >= 0) continue;  // the rest of such a row is unspecified
          CHECK(got.status[r].ex.lo == want.status[r].ex.lo);
          CHECK(got.status[r].ex.hi == want.status[r].ex.hi);
          index_t bad_codes = 0, bad_meta = 0;
          for (index_t b = 0; b < want.lay.nblk; ++b) {
            const std::int8_t* cg = got.lay.codes(got.panel.data(), r, b);
            const std::int8_t* cw = want.lay.codes(want.panel.data(), r, b);
            for (int i = 0; i < Act::kBlock; ++i) bad_codes += cg[i] != cw[i];  // padding codes included
            for (index_t k = 0; k < 2; ++k)
              bad_meta +=
                  !same_meta(*got.lay.meta(got.panel.data(), r, b, k), *want.lay.meta(want.panel.data(), r, b, k));
          }
          CHECK(bad_codes == 0);
          CHECK(bad_meta == 0);
        }
      });
    }
  }
}

/// Data sets, each rows × cols.
std::vector<std::vector<float>> data_sets(index_t rows, index_t cols, int block, int frac_bits) {
  std::mt19937 rng(12345u + static_cast<unsigned>(cols));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(-300, 300);
  std::uniform_int_distribution<int> pick(0, 9);
  const std::size_t n = static_cast<std::size_t>(rows * cols);
  std::vector<std::vector<float>> sets;
  std::vector<float> v(n);
  // Random with outliers.
  for (std::size_t i = 0; i < n; ++i) v[i] = nd(rng) * (i % 29 == 3 ? 50.0f : 1.0f);
  sets.push_back(v);
  // Exact ties: multiples of half a code step for a block whose amax fixes the exponent.
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t in_block = (i % static_cast<std::size_t>(cols)) % static_cast<std::size_t>(block);
    // amax = 1.0 → LQER e = 0, OCP e = 0; a step is 2^-F.
    v[i] = in_block == 0 ? 1.0f : std::ldexp(float(small(rng)) + 0.5f, -frac_bits) * (pick(rng) < 5 ? 1.0f : -1.0f);
    if (std::fabs(v[i]) > 1.0f) v[i] = std::copysign(std::ldexp(1.0f, -1) + std::ldexp(0.5f, -frac_bits), v[i]);
  }
  sets.push_back(v);
  // Powers of two as amax (where the two rules' exponents differ) and exact-power blocks.
  for (std::size_t i = 0; i < n; ++i) v[i] = std::ldexp(pick(rng) < 5 ? 1.0f : -1.0f, small(rng) % 20);
  sets.push_back(v);
  // Subnormal and tiny: blocks entirely subnormal, mixed with normal ones.
  for (std::size_t i = 0; i < n; ++i) {
    const int k = pick(rng);
    v[i] = k < 4   ? std::ldexp(nd(rng), -140)
           : k < 7 ? std::ldexp(nd(rng), -128)
           : k < 8 ? FLT_TRUE_MIN * float(small(rng))
                   : std::ldexp(nd(rng), -120);
  }
  sets.push_back(v);
  // Huge: near FLT_MAX, 2^127, and the E8M0 saturation of the LQER rule above 2^127.
  for (std::size_t i = 0; i < n; ++i) {
    const int k = pick(rng);
    v[i] = k < 3 ? FLT_MAX * (nd(rng) > 0 ? 1.0f : -1.0f) : k < 6 ? std::ldexp(nd(rng), 127) : std::ldexp(nd(rng), 100);
  }
  sets.push_back(v);
  // Zeros, negative zeros and one-hot blocks.
  for (std::size_t i = 0; i < n; ++i) v[i] = (i % 7 == 0) ? -0.0f : (i % 53 == 0 ? nd(rng) : 0.0f);
  sets.push_back(v);
  return sets;
}

template <class Act>
void check_format() {
  // The AVX-512 prologue takes 16 whole blocks at a time and the rest one by one:
  // 16·B + 16·B + 7·B + 5 has two whole groups, whole blocks after them and a partial block.
  for (index_t cols : {index_t{Act::kBlock}, index_t{1}, index_t{7}, index_t{100}, index_t{4096 + 17},
                       index_t{39 * Act::kBlock + 5}}) {
    const index_t rows = 5;
    int i = 0;
    for (const auto& x : data_sets(rows, cols, Act::kBlock, Act::kFractionBits)) {
      const char* names[] = {"random", "ties", "powers of two", "subnormal", "huge", "zeros"};
      compare_paths<Act>(x, rows, cols, names[i++]);
    }
  }
}

}  // namespace

TEST_CASE("block_exponent == shared_scale for every exponent, subnormals and random bit patterns") {
  std::vector<float> probes = {0.0f, FLT_TRUE_MIN, FLT_MIN, FLT_MAX, 1.0f, 1.5f, 2.0f, 0.75f};
  for (int e = -149; e <= 127; ++e)
    for (float m : {1.0f, 1.0000001f, 1.5f, 1.9999999f}) probes.push_back(std::ldexp(m, e));
  for (std::uint32_t b = 1; b < 4096; ++b) probes.push_back(std::bit_cast<float>(b));  // small subnormals
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::bit_cast<float>(static_cast<std::uint32_t>(rng() & 0x7fffffffu));
    if (std::isfinite(f)) probes.push_back(f);
  }
  int bad_ocp = 0, bad_lqer = 0;
  for (float a : probes) {
    bad_ocp += block_exponent<mxint8_ocp<32>>(a) != mxint8_ocp<32>::shared_scale(a).exponent();
    bad_lqer += block_exponent<mxint8_lqer<16>>(a) != mxint8_lqer<16>::shared_scale(a).exponent();
  }
  CHECK(bad_ocp == 0);
  CHECK(bad_lqer == 0);
}

TEST_CASE("prologue: every path == the scalar format, LQER rule block 16") {
  check_format<mxint<8, 16, mx_rule::lqer>>();
}
TEST_CASE("prologue: every path == the scalar format, OCP rule block 32") {
  check_format<mxint<8, 32, mx_rule::ocp>>();
}
TEST_CASE("prologue: every path == the scalar format, block 8 and 4-bit activations") {
  check_format<mxint<8, 8, mx_rule::lqer>>();
  check_format<mxint<4, 16, mx_rule::ocp>>();
}

TEST_CASE("prologue: every path == the scalar format for symmetric scaled integers (real scales)") {
  // Q8_0 (fp16 scale: huge rows overflow it and are refused), fp32 groups of
  // 128 and 16 (every path's vector encoder), groups of 8 (the ymm and NEON
  // encoders; AVX-512's scalar fallback); random, tie, subnormal (1/d
  // overflows: the divide), huge and zero data.
  const auto run = []<class Act>() {
    for (index_t cols : {index_t{Act::kBlock}, index_t{7}, index_t{100}, index_t{4096 + 17}}) {
      int i = 0;
      for (const auto& x : data_sets(5, cols, Act::kBlock, 0)) {
        const char* names[] = {"random", "ties", "powers of two", "subnormal", "huge", "zeros"};
        compare_paths<Act>(x, 5, cols, names[i++]);
      }
      // Exact ties of this scheme: amax = 127/128 makes d = 1/128 and 1/d = 128
      // exact, so (k + 0.5)/128 lands on k + 0.5 (half away from zero: k + 1).
      std::vector<float> ties(static_cast<std::size_t>(5 * cols));
      std::mt19937 rng(99);
      std::uniform_int_distribution<int> k(-127, 126);
      for (std::size_t j = 0; j < ties.size(); ++j)
        ties[j] =
            (j % static_cast<std::size_t>(cols)) % Act::kBlock == 0 ? 127.0f / 128.0f : (float(k(rng)) + 0.5f) / 128.0f;
      compare_paths<Act>(ties, 5, cols, "intq ties");
    }
  };
  run.operator()<q8_0>();
  run.operator()<intq<8, 128, int_scheme::symmetric, scale_dtype::f32>>();
  run.operator()<intq<8, 16, int_scheme::symmetric, scale_dtype::f16>>();
  run.operator()<intq<8, 8, int_scheme::symmetric, scale_dtype::f32>>();
}

/// Runs the scalar prologue on x (real-mode records when `real`) and counts
/// the records that `bad(record, consumer k, Σcodes, the block's scale, any
/// code nonzero)` rejects, the block quantized again by Act::quantize_block.
template <class Act, class Bad>
index_t count_bad_records(const std::vector<float>& x, index_t rows, index_t cols, bool real, Bad bad) {
  constexpr int B = Act::kBlock;
  const auto o = run_prologue<Act, generic_isa>(x, rows, cols, real);
  index_t n_bad = 0;
  for (index_t r = 0; r < rows; ++r)
    for (index_t b = 0; b < o.lay.nblk; ++b) {
      std::int8_t q[B];
      const index_t n = std::min<index_t>(B, cols - B * b);
      const auto s = Act::quantize_block(x.data() + r * cols + B * b, n, 1, q);
      int sum = 0;
      bool any = false;
      for (index_t i = 0; i < n; ++i) {
        sum += q[i];
        any |= q[i] != 0;
      }
      for (int k = 0; k < 2; ++k)
        n_bad += bad(*o.lay.meta(const_cast<std::uint8_t*>(o.panel.data()), r, b, k), k, sum, s, any);
    }
  return n_bad;
}

TEST_CASE("prologue: records give back −off·Σcodes and 2^(ex − Fx) exactly") {
  using Act = mxint<8, 16, mx_rule::lqer>;
  const index_t rows = 3, cols = 200;
  auto x = random_matrix(rows, cols, 1.0f, 5, true);
  for (index_t i = 0; i < 16; ++i) x[static_cast<std::size_t>(i)] = std::ldexp(x[static_cast<std::size_t>(i)], -140);
  for (index_t i = 16; i < 32; ++i) x[static_cast<std::size_t>(i)] = std::ldexp(x[static_cast<std::size_t>(i)], 120);
  for (index_t i = 32; i < 48; ++i) x[static_cast<std::size_t>(i)] = 0.0f;
  const int offsets[2] = {8, 128}, wfrac[2] = {3, 7};
  CHECK(count_bad_records<Act>(x, rows, cols, false, [&](const act_block_meta& m, int k, int sum, e8m0 s, bool any) {
          const int ex = any ? s.exponent() : 0;
          return (m.init() != -offsets[k] * sum) + (m.scale(wfrac[k]) != std::ldexp(1.0f, ex - Act::kFractionBits));
        }) == 0);
}

TEST_CASE("prologue: real-mode records give back −off·Σcodes and the activation scale as a float") {
  const index_t rows = 3, cols = 200;
  auto x = random_matrix(rows, cols, 1.0f, 6, true);
  for (index_t i = 32; i < 64; ++i) x[static_cast<std::size_t>(i)] = 0.0f;  // an all-zero block: scale 0
  const int offsets[2] = {8, 128};
  // Q8_0 activations (fp16 scales): the format's scale_value, bit for bit.
  CHECK(count_bad_records<q8_0>(
            x, rows, cols, true, [&](const act_block_meta& m, int k, int sum, q8_0::block_scale s, bool) {
              return (m.real_init() != -offsets[k] * sum) + (std::bit_cast<std::uint32_t>(m.real_scale()) !=
                                                             std::bit_cast<std::uint32_t>(q8_0::scale_value(s)));
            }) == 0);
  // MXINT8 activations for real-mode consumers: 2^(ex − Fx) (ex = 0 for an all-zero block).
  using Act = mxint<8, 16, mx_rule::lqer>;
  CHECK(count_bad_records<Act>(x, rows, cols, true, [&](const act_block_meta& m, int k, int sum, e8m0 s, bool any) {
          return (m.real_init() != -offsets[k] * sum) +
                 (m.real_scale() != std::ldexp(1.0f, (any ? s.exponent() : 0) - Act::kFractionBits));
        }) == 0);
}

TEST_CASE("prologue: the first non-finite element of each row is reported") {
  using Act = mxint<8, 16, mx_rule::lqer>;
  const index_t rows = 4, cols = 70;
  auto x = random_matrix(rows, cols, 1.0f, 3);
  x[1 * cols + 33] = std::numeric_limits<float>::quiet_NaN();
  x[1 * cols + 60] = std::numeric_limits<float>::infinity();
  x[3 * cols + 69] = -std::numeric_limits<float>::infinity();
  for (kernel_path path : paths_to_test())
    with_isa(path, [&](auto isa) {
      const auto o = run_prologue<Act, decltype(isa)>(x, rows, cols);
      INFO("path=" << std::string(to_string(path)));
      CHECK(o.status[0].bad_col == -1);
      CHECK(o.status[1].bad_col == 33);
      CHECK(o.status[2].bad_col == -1);
      CHECK(o.status[3].bad_col == 69);
    });
}
