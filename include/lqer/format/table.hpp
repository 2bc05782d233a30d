// lqer — the format table: every format family a front end can name at run
// time, its names, block lengths, defaults and help text, and the dispatch
// from a name to the format type. The one list (DESIGN.md §3: "a list of
// formats … exists once and the CLI, examples and bindings are generated from
// it"): the `lqer` program, the Python package and the example engines read it.
//
// Formats are types (`mxint<4, 32, mx_rule::ocp>`, `intq<8, kPerRow>`), so a
// name read from a command line needs one instantiation per combination that
// may be named. The table is that closed set, by family:
//
//   mx    mxint2, mxint3, mxint4, mxint8   rule ocp | lqer     blocks 8 … 128
//   intq  int4, int8                       scheme sym | asym   scale f32 | f16   blocks row, 8 … 128
//   ggml  q4_0, q4_1, q8_0                 block 32, fp16 scale (q4_1: and an fp16 minimum)
//
// It is deliberately not "every template argument": each entry is a full
// instantiation of whatever the visitor does (quantized_matrix, a writer),
// so it holds the block lengths people use. A caller that instantiates more
// per format (factorize, the fused kernels) names a subset of the table
// (mx_subset below) rather than a list of its own, and the subset is checked
// against the table at compile time.
//
// Errors: a name, block or option the table does not have is a format_error
// (a value_error) with a sentence that says what exists; the `lqer` program
// turns it into its usage error, the Python package into ValueError.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "lqer/error.hpp"
#include "lqer/format/format.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/format/mxint.hpp"

namespace lqer {

/// A format name, block or option that the format table does not have.
class format_error : public value_error {
 public:
  using value_error::value_error;
};

// ---------------------------------------------------------------------------
// The table

/// The format families a front end can name.
enum class format_family {
  mx,    ///< MX block integers (mxint.hpp): one E8M0 exponent per block
  intq,  ///< scaled integers (intq.hpp): a real scale (and zero point) per group or row
  ggml,  ///< llama.cpp's Q4_0 / Q4_1 / Q8_0 (intq.hpp aliases q4_0, q4_1, q8_0; ggml_blocks.hpp)
};

/// A compile-time list of ints: bit widths, block lengths.
template <int... Vs>
struct int_list {
  static constexpr std::array<int, sizeof...(Vs)> kValues{Vs...};
  static constexpr bool contains(int v) noexcept { return ((v == Vs) || ...); }
};

/// The bit widths and block lengths of each family. The names, the help text
/// and the dispatch are all generated from these lists.
using mx_bits = int_list<2, 3, 4, 8>;
using mx_blocks = int_list<8, 16, 32, 64, 128>;
using intq_bits = int_list<4, 8>;
using intq_blocks = int_list<kPerRow, 8, 16, 32, 64, 128>;
inline constexpr int kGgmlBlock = 32;

/// One row of the table: a name a user types and the family and width it means.
struct format_entry {
  std::string_view name;
  format_family family;
  int bits;
  scale_kind scale;  ///< the family's scale kind (intq: the default, f32; --scale f16 gives f16)
};

/// Every format name, in the order help texts list them.
inline constexpr format_entry kFormatTable[] = {
    {"mxint2", format_family::mx, 2, scale_kind::e8m0_pow2}, {"mxint3", format_family::mx, 3, scale_kind::e8m0_pow2},
    {"mxint4", format_family::mx, 4, scale_kind::e8m0_pow2}, {"mxint8", format_family::mx, 8, scale_kind::e8m0_pow2},
    {"int4", format_family::intq, 4, scale_kind::f32},       {"int8", format_family::intq, 8, scale_kind::f32},
    {"q4_0", format_family::ggml, 4, scale_kind::f16},       {"q4_1", format_family::ggml, 4, scale_kind::f16},
    {"q8_0", format_family::ggml, 8, scale_kind::f16},
};

/// The ggml family's rows by type: each is an alias of an intq type (q4_0
/// signed-extreme, q4_1 with a minimum, q8_0 symmetric), so the name comes
/// from the type, not from its width (two of them are 4-bit).
template <class F>
inline constexpr std::string_view kGgmlNameOf{};
template <>
inline constexpr std::string_view kGgmlNameOf<q4_0>{"q4_0"};
template <>
inline constexpr std::string_view kGgmlNameOf<q4_1>{"q4_1"};
template <>
inline constexpr std::string_view kGgmlNameOf<q8_0>{"q8_0"};
/// Calls visit(std::type_identity<F>{}) for each ggml row's type, in table order.
template <class Visit>
void for_each_ggml_type(Visit&& visit) {
  visit(std::type_identity<q4_0>{});
  visit(std::type_identity<q4_1>{});
  visit(std::type_identity<q8_0>{});
}
/// Calls visit(std::type_identity<F>{}) for the ggml row named `name`; false when there is none.
template <class Visit>
bool visit_ggml_type(std::string_view name, Visit& visit) {
  bool found = false;
  for_each_ggml_type([&]<class F>(std::type_identity<F> t) {
    if (!found && kGgmlNameOf<F> == name) {
      found = true;
      visit(t);
    }
  });
  return found;
}
/// The table name of the ggml type whose F::name() is `stored` ("int4_g32_sext_f16"
/// → "q4_0"), as checkpoints record formats; empty for any other name.
inline std::string_view ggml_name_of_stored(std::string_view stored) {
  std::string_view out;
  for_each_ggml_type([&]<class F>(std::type_identity<F>) {
    if (F::name() == stored) out = kGgmlNameOf<F>;
  });
  return out;
}

/// One of llama.cpp's layer formats as an LQER layer and the fused kernel take
/// it: the weight format, the factors' (A, B) and the activations'. ggml
/// multiplies Q4_0 weights with Q8_0 activations and Q4_1 with Q8_1 — Q8_0's
/// codes and scale plus d·Σq, a sum the fused kernel forms itself, so Q8_0
/// serves both. LQER keeps A and B in 8 bits: Q8_0, at ggml's block.
template <class W, class LR, class Act>
struct ggml_layer {
  using weight = W;
  using lowrank = LR;
  using activation = Act;
};
/// Calls visit(L{}) for each of llama.cpp's layer formats L = ggml_layer<W, LR, Act> — the one
/// list that the Python package, the example engines and the CLI build.
template <class Visit>
void for_each_ggml_layer(Visit&& visit) {
  visit(ggml_layer<q4_0, q8_0, q8_0>{});
  visit(ggml_layer<q4_1, q8_0, q8_0>{});
}
/// "q4_0 or q4_1 weights with q8_0 A/B and activations": for_each_ggml_layer in words.
inline std::string ggml_layers_text() {
  std::string s;
  for_each_ggml_layer([&]<class L>(L) {
    if (!s.empty()) s += ", or ";
    s += std::string(kGgmlNameOf<typename L::weight>) + " weights with " +
         std::string(kGgmlNameOf<typename L::lowrank>) + " A/B and " +
         std::string(kGgmlNameOf<typename L::activation>) + " activations";
  });
  return s + " (block " + std::to_string(kGgmlBlock) + ")";
}

namespace detail {
template <int... Vs>
consteval bool table_has_family_bits(format_family f, int_list<Vs...>) {
  std::size_t n = 0;
  for (const auto& e : kFormatTable) n += e.family == f ? 1 : 0;
  if (n != sizeof...(Vs)) return false;
  for (const int b : {Vs...}) {
    bool found = false;
    for (const auto& e : kFormatTable) found = found || (e.family == f && e.bits == b);
    if (!found) return false;
  }
  return true;
}
}  // namespace detail
static_assert(detail::table_has_family_bits(format_family::mx, mx_bits{}), "kFormatTable's MX rows must be mx_bits");
static_assert(detail::table_has_family_bits(format_family::intq, intq_bits{}),
              "kFormatTable's intq rows must be intq_bits");

/// The table row named `name`, or nullptr.
constexpr const format_entry* find_format(std::string_view name) noexcept {
  for (const auto& f : kFormatTable)
    if (f.name == name) return &f;
  return nullptr;
}

/// The row whose name format type F is known by, from its family and width
/// alone ("mxint4" for every mxint<4, …>, "int8" for every symmetric or
/// asymmetric intq<8, …>, "q4_0" for q4_0), or nullptr for a type of no row.
/// q8_0 is also int8 --scheme sym --scale f16 --block 32 (one type): "q8_0".
template <class F>
constexpr const format_entry* find_format_of() noexcept {
  for (const auto& e : kFormatTable) {
    if constexpr (requires { F::kRule; }) {
      if (e.family == format_family::mx && e.bits == F::kBits) return &e;
    } else if constexpr (!kGgmlNameOf<F>.empty()) {
      if (e.family == format_family::ggml && e.name == kGgmlNameOf<F>) return &e;
    } else if constexpr (requires { F::kScheme; }) {
      if (F::kScheme == int_scheme::symmetric || F::kScheme == int_scheme::asymmetric)
        if (e.family == format_family::intq && e.bits == F::kBits) return &e;
    }
  }
  return nullptr;
}

/// The table's name for format type F: "mxint4", "int8", "q4_0".
template <class F>
std::string short_name() {
  constexpr const format_entry* e = find_format_of<F>();
  static_assert(e != nullptr, "short_name: this format type is not in the format table");
  return std::string(e->name);
}

/// The format names, in table order.
inline std::vector<std::string> format_names() {
  std::vector<std::string> v;
  for (const auto& f : kFormatTable) v.emplace_back(f.name);
  return v;
}

/// The format names in table order, one string: "mxint2, mxint3, …, q8_0".
inline std::string format_names_text() {
  std::string s;
  for (const auto& f : kFormatTable) {
    if (!s.empty()) s += ", ";
    s += f.name;
  }
  return s;
}

/// "row" for kPerRow, else the number.
inline std::string block_name(int b) { return b == kPerRow ? std::string("row") : std::to_string(b); }

/// "8, 16, 32, 64 or 128": each value through block_name(), after `prefix`
/// ("mxint" gives "mxint4 or mxint8"); `last` before the last one.
template <int... Vs>
std::string list_text(int_list<Vs...>, std::string_view prefix = {}, std::string_view last = " or ") {
  std::string s;
  const int v[] = {Vs...};
  for (std::size_t i = 0; i < sizeof...(Vs); ++i) {
    if (i) s += i + 1 == sizeof...(Vs) ? last : ", ";
    s += prefix;
    s += block_name(v[i]);
  }
  return s;
}

namespace detail {
/// "a, b, c": the names of one family.
inline std::string names_text(format_family fam) {
  std::string s;
  for (const auto& f : kFormatTable) {
    if (f.family != fam) continue;
    if (!s.empty()) s += ", ";
    s += f.name;
  }
  return s;
}
}  // namespace detail

/// One paragraph per family for --help: which blocks, rules and schemes exist.
inline std::string format_help() {
  const auto column = [](std::string names) {  // the names, then the text from column 35
    names.resize(std::max<std::size_t>(names.size() + 1, 33), ' ');
    return "  " + names;
  };
  return "Formats:\n" + column(detail::names_text(format_family::mx)) +
         "MX block integers, one shared power-of-two (E8M0) exponent per\n"
         "                                   block; --rule ocp (OCP MX v1.0, default, block 32) or lqer (the\n"
         "                                   LQER reference's block_fp, default block 16); --block " +
         list_text(mx_blocks{}) + ".\n" + column(detail::names_text(format_family::intq)) +
         "scaled integers with a real scale per group; --scheme sym|asym,\n"
         "                                   --scale f32|f16; --block " +
         list_text(intq_blocks{}) +
         " (default row: one\n"
         "                                   scale per row, or per column with --axis 0).\n" +
         column(detail::names_text(format_family::ggml)) +
         "llama.cpp's Q4_0 / Q4_1 / Q8_0 encodings (block 32, fp16 scale;\n"
         "                                   Q4_1 also an fp16 block minimum: u·d + m).\n";
}

// ---------------------------------------------------------------------------
// A format as named at run time

/// What the user asked for; `block` == kDefaultBlock until resolve() picks the format's default.
struct format_spec {
  static constexpr int kDefaultBlock = -1;

  std::string name;                           ///< a kFormatTable name
  int block = kDefaultBlock;                  ///< elements per block; kPerRow (0) = whole row
  mx_rule rule = mx_rule::ocp;                ///< MX formats only
  int_scheme scheme = int_scheme::symmetric;  ///< int4 / int8 only
  scale_dtype scale = scale_dtype::f32;       ///< int4 / int8 only
};

/// "ocp" | "lqer"; nullopt otherwise.
inline std::optional<mx_rule> parse_mx_rule(std::string_view r) noexcept {
  if (r == "ocp") return mx_rule::ocp;
  if (r == "lqer") return mx_rule::lqer;
  return std::nullopt;
}

/// Parses a --block value: a positive integer, or "row" / "0" for the whole row.
inline int parse_block(std::string_view text) {
  if (text == "row") return kPerRow;
  // std::string(...) + ...: GCC 12 warns falsely (-Wrestrict, GCC bug 105651)
  // on `"literal" + std::string&&` once inlined.
  const auto bad = [&] {
    return format_error(std::string("--block must be a positive integer or 'row', not '") + std::string(text) + "'");
  };
  if (text.empty() || text.size() > 6) throw bad();  // six digits: far beyond any block, and no overflow
  int v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') throw bad();
    v = v * 10 + (c - '0');
  }
  return v;
}

/// The family's default block: MX 32 (OCP) or 16 (LQER rule), intq a row, ggml 32.
inline int default_block(format_family f, mx_rule rule) noexcept {
  switch (f) {
    case format_family::mx: return rule == mx_rule::ocp ? 32 : 16;
    case format_family::intq: return kPerRow;
    case format_family::ggml: return kGgmlBlock;
  }
  return kPerRow;
}

/// Fills in the format's default block and checks that every option given
/// applies to the format. `explicit_*` say which options the user typed (an
/// option that was left at its default is never an error). format_error otherwise.
inline format_spec resolve(format_spec s, bool explicit_rule, bool explicit_scheme, bool explicit_scale) {
  const format_entry* f = find_format(s.name);
  if (!f) throw format_error("unknown format '" + s.name + "'; known formats: " + format_names_text());
  if (f->family != format_family::mx && explicit_rule)
    throw format_error("--rule applies to the MX formats (mxint2/3/4/8) only, not to " + s.name);
  if (f->family != format_family::intq && (explicit_scheme || explicit_scale))
    throw format_error(std::string(explicit_scheme ? "--scheme" : "--scale") +
                       " applies to int4 and int8 only, not to " + s.name);
  if (s.block == format_spec::kDefaultBlock) s.block = default_block(f->family, s.rule);
  if (f->family == format_family::ggml && s.block != kGgmlBlock)
    throw format_error(s.name + " is llama.cpp's format with blocks of 32 only; got --block " + block_name(s.block));
  return s;
}

// ---------------------------------------------------------------------------
// From a spec to a type

namespace detail {

template <int Bits, mx_rule Rule>
struct mx_family_of {
  template <int B>
  using type = mxint<Bits, B, Rule>;
};
template <int Bits, int_scheme Scheme, scale_dtype Scale>
struct intq_family_of {
  template <int B>
  using type = intq<Bits, B, Scheme, Scale>;
};

/// Calls visit with Family::type<block> if `block` is in the list; false otherwise.
template <class Family, class Visit, int... Bs>
bool dispatch_block(int block, Visit& visit, int_list<Bs...>) {
  return ((block == Bs ? (visit(std::type_identity<typename Family::template type<Bs>>{}), true) : false) || ...);
}

template <class Visit, int... Bits>
bool dispatch_mx(int bits, const format_spec& s, Visit& visit, int_list<Bits...>) {
  const auto one = [&]<int B>(std::integral_constant<int, B>) {
    return s.rule == mx_rule::ocp ? dispatch_block<mx_family_of<B, mx_rule::ocp>>(s.block, visit, mx_blocks{})
                                  : dispatch_block<mx_family_of<B, mx_rule::lqer>>(s.block, visit, mx_blocks{});
  };
  return ((bits == Bits && one(std::integral_constant<int, Bits>{})) || ...);
}

template <int Bits, int_scheme Scheme, class Visit>
bool dispatch_intq_scale(const format_spec& s, Visit& visit) {
  return s.scale == scale_dtype::f32
             ? dispatch_block<intq_family_of<Bits, Scheme, scale_dtype::f32>>(s.block, visit, intq_blocks{})
             : dispatch_block<intq_family_of<Bits, Scheme, scale_dtype::f16>>(s.block, visit, intq_blocks{});
}

template <class Visit, int... Bits>
bool dispatch_intq(int bits, const format_spec& s, Visit& visit, int_list<Bits...>) {
  const auto one = [&]<int B>(std::integral_constant<int, B>) {
    switch (s.scheme) {
      case int_scheme::symmetric: return dispatch_intq_scale<B, int_scheme::symmetric>(s, visit);
      case int_scheme::asymmetric: return dispatch_intq_scale<B, int_scheme::asymmetric>(s, visit);
      case int_scheme::signed_extreme:  // reachable only through q4_0
      case int_scheme::with_min:        // reachable only through q4_1
        return false;
    }
    return false;
  };
  return ((bits == Bits && one(std::integral_constant<int, Bits>{})) || ...);
}

template <class Visit>
void dispatch(const format_spec& s, Visit& visit) {
  const format_entry* f = find_format(s.name);
  if (!f) throw format_error("unknown format '" + s.name + "'");
  switch (f->family) {
    case format_family::mx:
      if (!dispatch_mx(f->bits, s, visit, mx_bits{}))
        throw format_error(s.name + " supports --block " + list_text(mx_blocks{}) + ", not " + block_name(s.block) +
                           (s.block == kPerRow ? " (MX formats share one exponent per block; for a scale per row use "
                                                 "int8 or int4)"
                                               : ""));
      return;
    case format_family::intq:
      if (!dispatch_intq(f->bits, s, visit, intq_bits{}))
        throw format_error(s.name + " supports --block " + list_text(intq_blocks{}) + ", not " + block_name(s.block));
      return;
    case format_family::ggml:
      if (s.block != kGgmlBlock) throw format_error(s.name + " supports --block 32 only, not " + block_name(s.block));
      visit_ggml_type(s.name, visit);  // the table's ggml names are kGgmlNameOf's (tested)
      return;
  }
}

}  // namespace detail

/// Calls `visit(std::type_identity<F>{})` with the format type `spec` names
/// (spec must have been resolve()d: its block is concrete) and returns what
/// the visitor returns (the same type for every F). format_error, before any
/// call, for a combination not in the table.
template <class Visit>
auto with_format(const format_spec& spec, Visit&& visit) {
  using result = std::invoke_result_t<Visit&, std::type_identity<q8_0>>;
  if constexpr (std::is_void_v<result>) {
    detail::dispatch(spec, visit);
  } else {
    // Collected through an optional because the fold in dispatch_block
    // discards return values.
    std::optional<result> out;
    auto store = [&]<class F>(std::type_identity<F> t) { out.emplace(visit(t)); };
    detail::dispatch(spec, store);
    return std::move(*out);
  }
}

/// Calls `visit(std::type_identity<F>{})` for every format type of the table
/// (every family, width, rule or scheme and scale, and block).
template <class Visit>
void for_each_format_type(Visit&& visit) {
  for (const auto& f : kFormatTable) {
    format_spec s;
    s.name = std::string(f.name);
    switch (f.family) {
      case format_family::mx:
        for (const mx_rule r : {mx_rule::ocp, mx_rule::lqer})
          for (const int b : mx_blocks::kValues) {
            s.rule = r;
            s.block = b;
            with_format(s, visit);
          }
        break;
      case format_family::intq:
        for (const int_scheme sc : {int_scheme::symmetric, int_scheme::asymmetric})
          for (const scale_dtype d : {scale_dtype::f32, scale_dtype::f16})
            for (const int b : intq_blocks::kValues) {
              s.scheme = sc;
              s.scale = d;
              s.block = b;
              with_format(s, visit);
            }
        break;
      case format_family::ggml:
        s.block = kGgmlBlock;
        with_format(s, visit);
        break;
    }
  }
}

/// Calls `visit(std::type_identity<F>{})` with the format type of the table
/// whose F::name() is `name` ("mxint4_b16_lqer", "int4_g128_asym_f16") and
/// returns true; false when the table has none (a format the library has but
/// the table does not instantiate).
template <class Visit>
bool with_format_named(const std::string& name, Visit&& visit) {
  bool found = false;
  for_each_format_type([&]<class F>(std::type_identity<F> t) {
    if (!found && F::name() == name) {
      found = true;
      visit(t);
    }
  });
  return found;
}

// ---------------------------------------------------------------------------
// MX subsets: what callers that instantiate more per format accept

/// A subset of the table's MX bit widths (a role's: the weight's, the
/// activations'), checked against mx_bits at compile time.
template <int... Bits>
struct mx_subset : int_list<Bits...> {
  static_assert(sizeof...(Bits) > 0 && (mx_bits::contains(Bits) && ...),
                "mx_subset: every bit width must be one of the format table's MX widths (mx_bits)");
};

/// The table's MX format of `Bits`, `Block` and `Rule`, checked to be a table entry.
template <int Bits, int Block, mx_rule Rule>
requires(mx_bits::contains(Bits) && mx_blocks::contains(Block)) using mx_format = mxint<Bits, Block, Rule>;

/// The bit width of an MX name of the table ("mxint4" → 4); 0 for any other name.
constexpr int mx_bits_of(std::string_view name) noexcept {
  const format_entry* f = find_format(name);
  return f && f->family == format_family::mx ? f->bits : 0;
}

/// An MX format name as Format::name() writes it: "mxint4_b16_lqer".
struct mx_name {
  std::string format;  ///< the table name, "mxint4"
  int bits = 0;
  int block = 0;
  mx_rule rule = mx_rule::ocp;
};

/// Parses "mxint<bits>_b<block>_<ocp|lqer>" as mxint::name() writes it for
/// any mxint type (bits 2 … 8); nullopt otherwise. Neither the width nor the
/// block is checked against the table: the caller's subset decides, and says so.
inline std::optional<mx_name> parse_mx_name(std::string_view name) {
  const std::size_t b = name.find("_b"), r = name.rfind('_');
  if (b != 6 || !name.starts_with("mxint") || r == std::string_view::npos || r <= b + 2) return std::nullopt;
  mx_name m;
  m.format = std::string(name.substr(0, b));
  m.bits = m.format[5] - '0';
  const std::string_view block = name.substr(b + 2, r - b - 2);
  const std::optional<mx_rule> rule = parse_mx_rule(name.substr(r + 1));
  if (m.bits < 2 || m.bits > 8 || !rule || block.empty() || block.size() > 4 ||
      block.find_first_not_of("0123456789") != std::string_view::npos)
    return std::nullopt;
  m.block = 0;
  for (const char c : block) m.block = m.block * 10 + (c - '0');
  m.rule = *rule;
  return m;
}

/// Calls visit(std::type_identity<mxint<bits, Block, rule>>{}) when `bits` is
/// in Subset and returns true; false otherwise (nothing called).
template <int Block, class Visit, int... Bits>
bool with_mx_format(int bits, mx_rule rule, mx_subset<Bits...>, Visit&& visit) {
  const auto one = [&]<int B>(std::integral_constant<int, B>) {
    if (rule == mx_rule::ocp)
      visit(std::type_identity<mxint<B, Block, mx_rule::ocp>>{});
    else
      visit(std::type_identity<mxint<B, Block, mx_rule::lqer>>{});
    return true;
  };
  return ((bits == Bits && one(std::integral_constant<int, Bits>{})) || ...);
}

}  // namespace lqer
