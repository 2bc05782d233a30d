// The format table (format/table.hpp): every entry dispatches to a type whose
// name, width, block and scale kind match what was asked for; parse and
// resolve errors; the help text names every format; and the concept's
// additions (format.hpp): kScaleKind per family, code_value the identity for
// the linear integer formats.
#include <doctest/doctest.h>

#include <set>
#include <string>
#include <type_traits>

#include "lqer/format/ggml_blocks.hpp"
#include "lqer/format/table.hpp"

using namespace lqer;

namespace {

// What the type the table dispatched to says about itself.
struct seen {
  std::string name;
  int bits = 0, block = -1;
  scale_kind scale{};
  bool zero_point = false;
};

seen visit_spec(const format_spec& s) {
  return with_format(s, []<class F>(std::type_identity<F>) {
    static_assert(storable_format<F>);
    return seen{F::name(), F::kBits, F::kBlock, F::kScaleKind, F::kHasZeroPoint};
  });
}

template <class F>
void check_linear_codes() {
  static_assert(has_linear_codes<F>());
  for (int q = F::kQmin; q <= F::kQmax; ++q) CHECK(F::code_value(static_cast<std::int8_t>(q)) == q);
}

}  // namespace

TEST_CASE("table: every MX entry, rule and block dispatches to the mxint it names") {
  for (const auto& e : kFormatTable) {
    if (e.family != format_family::mx) continue;
    for (const mx_rule r : {mx_rule::ocp, mx_rule::lqer})
      for (const int b : mx_blocks::kValues) {
        format_spec s;
        s.name = std::string(e.name);
        s.rule = r;
        s.block = b;
        const seen t = visit_spec(s);
        CAPTURE(t.name);
        CHECK(t.bits == e.bits);
        CHECK(t.block == b);
        CHECK(t.scale == scale_kind::e8m0_pow2);
        CHECK(t.scale == e.scale);
        CHECK_FALSE(t.zero_point);
        CHECK(t.name == std::string(e.name) + "_b" + std::to_string(b) + "_" + to_string(r));
      }
  }
}

TEST_CASE("table: every intq entry, scheme, scale and block dispatches to the intq it names") {
  for (const auto& e : kFormatTable) {
    if (e.family != format_family::intq) continue;
    for (const int_scheme sc : {int_scheme::symmetric, int_scheme::asymmetric})
      for (const scale_dtype d : {scale_dtype::f32, scale_dtype::f16})
        for (const int b : intq_blocks::kValues) {
          format_spec s;
          s.name = std::string(e.name);
          s.scheme = sc;
          s.scale = d;
          s.block = b;
          const seen t = visit_spec(s);
          CAPTURE(t.name);
          CHECK(t.bits == e.bits);
          CHECK(t.block == b);
          CHECK(t.scale == (d == scale_dtype::f32 ? scale_kind::f32 : scale_kind::f16));
          CHECK(t.zero_point == (sc == int_scheme::asymmetric));
          CHECK(t.name.starts_with(std::string(e.name) + (b == kPerRow ? "_row" : "_g" + std::to_string(b))));
        }
  }
}

TEST_CASE("table: the ggml entries are q4_0, q4_1 and q8_0, block 32, fp16 scale") {
  int n = 0;
  for (const auto& e : kFormatTable) {
    if (e.family != format_family::ggml) continue;
    ++n;
    const format_spec s = resolve(format_spec{std::string(e.name)}, false, false, false);
    CHECK(s.block == 32);
    const seen t = visit_spec(s);
    CHECK(t.bits == e.bits);
    CHECK(t.block == 32);
    CHECK(t.scale == scale_kind::f16);
    CHECK(t.scale == e.scale);
    CHECK(t.name == (e.name == "q4_0" ? q4_0::name() : e.name == "q4_1" ? q4_1::name() : q8_0::name()));
  }
  CHECK(n == 3);
  CHECK(short_name<q4_0>() == "q4_0");
  CHECK(short_name<q4_1>() == "q4_1");
  CHECK(short_name<q8_0>() == "q8_0");
  // A scheme only a ggml row has is no intq row's: reachable by its ggml name only.
  CHECK(find_format_of<intq<4, 64, int_scheme::with_min>>() == nullptr);
  CHECK(find_format_of<intq<4, 64, int_scheme::signed_extreme>>() == nullptr);
}

TEST_CASE("table: with_format_named finds every type the table has, by F::name()") {
  std::set<std::string> names;
  int q8_0_seen = 0;
  for_each_format_type([&]<class F>(std::type_identity<F>) {
    // No type twice, but q8_0: it is int8 --scheme sym --scale f16 --block 32 too.
    if constexpr (std::is_same_v<F, q8_0>)
      ++q8_0_seen;
    else
      CHECK(names.insert(F::name()).second);
    CHECK(find_format_of<F>() != nullptr);
  });
  CHECK(q8_0_seen == 2);
  names.insert(q8_0::name());
  // 4 MX widths × 2 rules × 5 blocks + 2 int widths × 2 schemes × 2 scales × 6 blocks + q4_0, q4_1
  CHECK(names.size() == 4 * 2 * 5 + 2 * 2 * 2 * 6 + 2);
  for (const auto& n : names) {
    std::string got;
    CHECK(with_format_named(n, [&]<class F>(std::type_identity<F>) { got = F::name(); }));
    CHECK(got == n);
  }
  CHECK_FALSE(with_format_named("mxint4_b24_ocp", [](auto) { FAIL("called"); }));
  CHECK_FALSE(with_format_named("fp8", [](auto) { FAIL("called"); }));
}

TEST_CASE("table: resolve fills in each family's default block") {
  CHECK(resolve(format_spec{"mxint4"}, false, false, false).block == 32);
  format_spec l{"mxint4"};
  l.rule = mx_rule::lqer;
  CHECK(resolve(l, true, false, false).block == 16);
  CHECK(resolve(format_spec{"int8"}, false, false, false).block == kPerRow);
  CHECK(resolve(format_spec{"q8_0"}, false, false, false).block == 32);
  format_spec given{"mxint8"};
  given.block = 64;
  CHECK(resolve(given, false, false, false).block == 64);
}

TEST_CASE("table: parse and resolve errors are format_errors that say what is wrong") {
  CHECK(parse_block("row") == kPerRow);
  CHECK(parse_block("0") == kPerRow);
  CHECK(parse_block("128") == 128);
  CHECK_THROWS_WITH_AS(parse_block("-1"), "--block must be a positive integer or 'row', not '-1'", format_error);
  CHECK_THROWS_AS(parse_block(""), format_error);
  CHECK_THROWS_AS(parse_block("1234567"), format_error);

  CHECK_THROWS_WITH_AS(resolve(format_spec{"mxint5"}, false, false, false),
                       "unknown format 'mxint5'; known formats: mxint2, mxint3, mxint4, mxint8, int4, int8, q4_0, q4_1, q8_0",
                       format_error);
  CHECK_THROWS_WITH_AS(resolve(format_spec{"int8"}, true, false, false),
                       "--rule applies to the MX formats (mxint2/3/4/8) only, not to int8", format_error);
  CHECK_THROWS_WITH_AS(resolve(format_spec{"mxint4"}, false, true, false),
                       "--scheme applies to int4 and int8 only, not to mxint4", format_error);
  CHECK_THROWS_WITH_AS(resolve(format_spec{"q4_0"}, false, false, true),
                       "--scale applies to int4 and int8 only, not to q4_0", format_error);
  format_spec q{"q4_0"};
  q.block = 16;
  CHECK_THROWS_WITH_AS(resolve(q, false, false, false),
                       "q4_0 is llama.cpp's format with blocks of 32 only; got --block 16", format_error);

  format_spec mx{"mxint4"};
  mx.block = 24;
  CHECK_THROWS_WITH_AS(visit_spec(mx), "mxint4 supports --block 8, 16, 32, 64 or 128, not 24", format_error);
  mx.block = kPerRow;
  CHECK_THROWS_WITH_AS(
      visit_spec(mx),
      "mxint4 supports --block 8, 16, 32, 64 or 128, not row (MX formats share one exponent per block; "
      "for a scale per row use int8 or int4)",
      format_error);
  format_spec in{"int4"};
  in.block = 7;
  CHECK_THROWS_WITH_AS(visit_spec(in), "int4 supports --block row, 8, 16, 32, 64 or 128, not 7", format_error);
  CHECK_THROWS_AS(visit_spec(format_spec{"fp8", 32}), format_error);
  // A format_error is a value_error: front ends that catch those see it.
  CHECK_THROWS_AS(visit_spec(format_spec{"fp8", 32}), value_error);
}

TEST_CASE("table: the help text lists every name, block list and option") {
  const std::string h = format_help();
  for (const auto& n : format_names()) CHECK(h.find(n) != std::string::npos);
  CHECK(format_names().size() == std::size(kFormatTable));
  CHECK(h.find("--block 8, 16, 32, 64 or 128.") != std::string::npos);
  CHECK(h.find("--block row, 8, 16, 32, 64 or 128") != std::string::npos);
  for (const char* o : {"--rule", "--scheme", "--scale"}) CHECK(h.find(o) != std::string::npos);
  // The descriptions start in one column (35) on every family's line.
  CHECK(h.find("\n  mxint2, mxint3, mxint4, mxint8   MX block") != std::string::npos);
  CHECK(h.find("\n  int4, int8                       scaled") != std::string::npos);
  CHECK(h.find("\n  q4_0, q4_1, q8_0                 llama.cpp") != std::string::npos);
}

TEST_CASE("table: MX names and subsets") {
  CHECK(mx_bits_of("mxint3") == 3);
  CHECK(mx_bits_of("mxint5") == 0);
  CHECK(mx_bits_of("int4") == 0);
  const auto m = parse_mx_name("mxint4_b16_lqer");
  REQUIRE(m);
  CHECK(m->format == "mxint4");
  CHECK(m->bits == 4);
  CHECK(m->block == 16);
  CHECK(m->rule == mx_rule::lqer);
  CHECK(parse_mx_name(mxint<8, 32, mx_rule::ocp>::name())->block == 32);
  CHECK(parse_mx_name("mxint5_b16_lqer")->bits == 5);  // an mxint type, though not in the table
  CHECK(mx_bits_of(parse_mx_name("mxint5_b16_lqer")->format) == 0);
  for (const char* bad : {"mxint9_b16_lqer", "mxintx_b16_ocp", "mxint4_b16_ieee", "mxint4_b_ocp", "int4_row_sym_f32",
                          "mxint4", "q4_0", "mxint4_bx6_ocp", "mxint4_b12345_ocp"})
    CHECK_FALSE(parse_mx_name(bad));

  using activations = mx_subset<4, 8>;
  std::string got;
  CHECK(with_mx_format<16>(8, mx_rule::lqer, activations{}, [&]<class F>(std::type_identity<F>) { got = F::name(); }));
  CHECK(got == "mxint8_b16_lqer");
  CHECK_FALSE(with_mx_format<16>(3, mx_rule::lqer, activations{}, [](auto) { FAIL("called"); }));
  CHECK(list_text(activations{}, "mxint") == "mxint4 or mxint8");
  CHECK(short_name<mx_format<3, 32, mx_rule::ocp>>() == "mxint3");
  CHECK(short_name<int8_per_row>() == "int8");
  CHECK(short_name<int4_g128_asym>() == "int4");
}

TEST_CASE("format concept: the scale kind of each family, and linear codes") {
  static_assert(mxint4_ocp<32>::kScaleKind == scale_kind::e8m0_pow2);
  static_assert(mxint8_lqer<16>::kScaleKind == scale_kind::e8m0_pow2);
  static_assert(intq<4, 128, int_scheme::asymmetric, scale_dtype::f32>::kScaleKind == scale_kind::f32);
  static_assert(int4_g128_asym::kScaleKind == scale_kind::f16);
  static_assert(q4_0::kScaleKind == scale_kind::f16);
  static_assert(q8_0::kScaleKind == scale_kind::f16);
  CHECK(std::string(to_string(scale_kind::e8m0_pow2)) == "e8m0");

  check_linear_codes<mxint<2, 32, mx_rule::ocp>>();
  check_linear_codes<mxint<4, 16, mx_rule::lqer>>();
  check_linear_codes<mxint<8, 32, mx_rule::ocp>>();
  check_linear_codes<int8_per_row>();
  check_linear_codes<int4_g128_asym>();
  check_linear_codes<q4_0>();
  check_linear_codes<q8_0>();
  // value = (code_value(q) − zero_point) · scale for every code of a block.
  const float x[32] = {1.5f, -3.25f, 0.75f, 7.0f, -0.5f};
  std::int8_t q[32];
  const auto s = q4_0::quantize_block(x, 32, 1, q);
  for (int i = 0; i < 32; ++i)
    CHECK(q4_0::decode(q[i], s) == float(q4_0::code_value(q[i]) - q4_0::zero_point(s)) * q4_0::scale_value(s));
}
