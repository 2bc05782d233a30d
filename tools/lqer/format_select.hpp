// lqer CLI — from runtime format names to compile-time format types.
//
// Formats are types in lqer (DESIGN.md §3): `mxint<4, 32, mx_rule::ocp>` and
// `intq<8, kPerRow>` are different classes, so a command that reads a format
// name from the command line needs one instantiation per combination it
// accepts. This header is that closed list, in one place: `with_format(spec,
// visitor)` calls `visitor(std::type_identity<F>{})` with the format type the
// spec names, or throws usage_error with a sentence saying what is supported.
// Every subcommand (quantize, and later factorize / forward) goes through it,
// so a new block length or format is added here once and every command gets it.
//
// The list is deliberately not "every template argument": each entry is a full
// instantiation of quantized_matrix (and of whatever the visitor does), so it
// holds the block lengths people actually use.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <lqer/lqer.hpp>

#include "commands.hpp"

namespace lqer::cli {

/// What the user asked for; `block` == kDefaultBlock until resolve() picks the format's default.
struct format_spec {
  static constexpr int kDefaultBlock = -1;

  std::string name;                                ///< mxint2/3/4/8, int4, int8, q4_0, q8_0
  int block = kDefaultBlock;                       ///< elements per block; kPerRow (0) = whole row
  mx_rule rule = mx_rule::ocp;                     ///< MX formats only
  int_scheme scheme = int_scheme::symmetric;       ///< int4 / int8 only
  scale_dtype scale = scale_dtype::f32;            ///< int4 / int8 only
};

namespace detail {

template <int... Bs>
struct int_list {};

// The supported block lengths, per family. The help text is generated from
// these same lists, so it cannot drift from what with_format accepts.
using mx_blocks = int_list<8, 16, 32, 64, 128>;
using int_blocks = int_list<kPerRow, 8, 16, 32, 64, 128>;

template <int... Bs>
std::vector<int> to_vector(int_list<Bs...>) {
  return {Bs...};
}

inline std::string block_name(int b) { return b == kPerRow ? std::string("row") : std::to_string(b); }

template <int... Bs>
std::string block_list(int_list<Bs...> l) {
  std::string s;
  const auto v = to_vector(l);
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += i + 1 == v.size() ? " or " : ", ";
    s += block_name(v[i]);
  }
  return s;
}

template <int Bits, mx_rule Rule>
struct mx_family {
  template <int B>
  using type = mxint<Bits, B, Rule>;
};
template <int Bits, int_scheme Scheme, scale_dtype Scale>
struct int_family {
  template <int B>
  using type = intq<Bits, B, Scheme, Scale>;
};

/// Calls visit with Family::type<block> if `block` is in the list; false otherwise.
template <class Family, class Visit, int... Bs>
bool dispatch_block(int block, Visit& visit, int_list<Bs...>) {
  return ((block == Bs ? (visit(std::type_identity<typename Family::template type<Bs>>{}), true) : false) || ...);
}

template <int Bits, class Visit>
bool dispatch_mx(const format_spec& s, Visit& visit) {
  return s.rule == mx_rule::ocp ? dispatch_block<mx_family<Bits, mx_rule::ocp>>(s.block, visit, mx_blocks{})
                                : dispatch_block<mx_family<Bits, mx_rule::lqer>>(s.block, visit, mx_blocks{});
}

template <int Bits, int_scheme Scheme, class Visit>
bool dispatch_int_scale(const format_spec& s, Visit& visit) {
  return s.scale == scale_dtype::f32
             ? dispatch_block<int_family<Bits, Scheme, scale_dtype::f32>>(s.block, visit, int_blocks{})
             : dispatch_block<int_family<Bits, Scheme, scale_dtype::f16>>(s.block, visit, int_blocks{});
}

template <int Bits, class Visit>
bool dispatch_int(const format_spec& s, Visit& visit) {
  switch (s.scheme) {
    case int_scheme::symmetric: return dispatch_int_scale<Bits, int_scheme::symmetric>(s, visit);
    case int_scheme::asymmetric: return dispatch_int_scale<Bits, int_scheme::asymmetric>(s, visit);
    case int_scheme::signed_extreme: return false;  // reachable only through q4_0
  }
  return false;
}

enum class family { mx, integer, ggml };

struct format_info {
  std::string_view name;
  family fam;
  int bits;
};

// The format names the CLI knows, in the order --help lists them.
inline constexpr format_info kFormats[] = {
    {"mxint2", family::mx, 2},      {"mxint3", family::mx, 3},      {"mxint4", family::mx, 4},
    {"mxint8", family::mx, 8},      {"int4", family::integer, 4},   {"int8", family::integer, 8},
    {"q4_0", family::ggml, 4},      {"q8_0", family::ggml, 8},
};

inline const format_info* find_format(std::string_view name) {
  for (const auto& f : kFormats)
    if (f.name == name) return &f;
  return nullptr;
}

}  // namespace detail

/// The format names with_format accepts, for help texts and CLI11 validators.
inline std::vector<std::string> format_names() {
  std::vector<std::string> v;
  for (const auto& f : detail::kFormats) v.emplace_back(f.name);
  return v;
}

/// One paragraph per family for --help: which blocks, rules and schemes exist.
inline std::string format_help() {
  return "Formats:\n"
         "  mxint2, mxint3, mxint4, mxint8   MX block integers, one shared power-of-two (E8M0) exponent per\n"
         "                                   block; --rule ocp (OCP MX v1.0, default, block 32) or lqer (the\n"
         "                                   LQER reference's block_fp, default block 16); --block " +
         detail::block_list(detail::mx_blocks{}) +
         ".\n"
         "  int4, int8                       scaled integers with a real scale per group; --scheme sym|asym,\n"
         "                                   --scale f32|f16; --block " +
         detail::block_list(detail::int_blocks{}) +
         " (default row: one\n"
         "                                   scale per row, or per column with --axis 0).\n"
         "  q4_0, q8_0                       llama.cpp's Q4_0 / Q8_0 encodings (block 32, fp16 scale).\n";
}

/// Parses a --block value: a positive integer, or "row" / "0" for the whole row.
inline int parse_block(std::string_view text) {
  if (text == "row") return kPerRow;
  // std::string(...) + ...: GCC 12 warns falsely (-Wrestrict, GCC bug 105651)
  // on `"literal" + std::string&&` once inlined.
  const auto bad = [&] {
    return usage_error(std::string("--block must be a positive integer or 'row', not '") + std::string(text) + "'");
  };
  if (text.empty() || text.size() > 6) throw bad();  // six digits: far beyond any block, and no overflow
  int v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') throw bad();
    v = v * 10 + (c - '0');
  }
  return v;
}

/// Fills in the format's default block and checks that every option given
/// applies to the format. `explicit_*` say which options the user typed (an
/// option that was left at its default is never an error).
inline format_spec resolve(format_spec s, bool explicit_rule, bool explicit_scheme, bool explicit_scale) {
  const detail::format_info* f = detail::find_format(s.name);
  if (!f) throw usage_error("unknown format '" + s.name + "'; known formats: mxint2, mxint3, mxint4, mxint8, int4, int8, q4_0, q8_0");
  if (f->fam != detail::family::mx && explicit_rule)
    throw usage_error("--rule applies to the MX formats (mxint2/3/4/8) only, not to " + s.name);
  if (f->fam != detail::family::integer && (explicit_scheme || explicit_scale))
    throw usage_error(std::string(explicit_scheme ? "--scheme" : "--scale") +
                      " applies to int4 and int8 only, not to " + s.name);
  switch (f->fam) {
    case detail::family::mx:
      if (s.block == format_spec::kDefaultBlock) s.block = s.rule == mx_rule::ocp ? 32 : 16;
      break;
    case detail::family::integer:
      if (s.block == format_spec::kDefaultBlock) s.block = kPerRow;
      break;
    case detail::family::ggml:
      if (s.block == format_spec::kDefaultBlock) s.block = 32;
      if (s.block != 32)
        throw usage_error(s.name + " is llama.cpp's format with blocks of 32 only; got --block " + detail::block_name(s.block));
      break;
  }
  return s;
}

namespace detail {
template <class Visit>
void dispatch(const format_spec& s, Visit& visit) {
  const format_info* f = find_format(s.name);
  if (!f) throw usage_error("unknown format '" + s.name + "'");
  bool done = false;
  switch (f->fam) {
    case family::mx:
      switch (f->bits) {
        case 2: done = dispatch_mx<2>(s, visit); break;
        case 3: done = dispatch_mx<3>(s, visit); break;
        case 4: done = dispatch_mx<4>(s, visit); break;
        case 8: done = dispatch_mx<8>(s, visit); break;
      }
      if (!done)
        throw usage_error(s.name + " supports --block " + block_list(mx_blocks{}) + ", not " + block_name(s.block) +
                          (s.block == kPerRow ? " (MX formats share one exponent per block; for a scale per row use int8 "
                                                "or int4)"
                                              : ""));
      return;
    case family::integer:
      done = f->bits == 4 ? dispatch_int<4>(s, visit) : dispatch_int<8>(s, visit);
      if (!done)
        throw usage_error(s.name + " supports --block " + block_list(int_blocks{}) + ", not " + block_name(s.block));
      return;
    case family::ggml:
      if (s.block != 32) throw usage_error(s.name + " supports --block 32 only, not " + block_name(s.block));
      if (f->bits == 4)
        visit(std::type_identity<q4_0>{});
      else
        visit(std::type_identity<q8_0>{});
      return;
  }
}
}  // namespace detail

/// Calls `visit(std::type_identity<F>{})` with the format type `spec` names
/// (spec must have been resolve()d: its block is concrete) and returns what
/// the visitor returns. Throws usage_error for a combination not in the list.
template <class Visit>
auto with_format(const format_spec& spec, Visit&& visit) {
  using result = std::invoke_result_t<Visit&, std::type_identity<q8_0>>;
  if constexpr (std::is_void_v<result>) {
    detail::dispatch(spec, visit);
  } else {
    // Every instantiation must return the same type; collected through an
    // optional because the fold in dispatch_block discards return values.
    std::optional<result> out;
    auto store = [&]<class F>(std::type_identity<F> t) { out.emplace(visit(t)); };
    detail::dispatch(spec, store);
    return std::move(*out);
  }
}

/// Calls `visit(std::type_identity<F>{})` with the format type whose
/// Format::name() is `name` ("mxint4_b16_lqer", "int4_g128_asym_f16") among
/// those with_format knows, and returns true; false when none is called that
/// (a format the library has but the command line does not instantiate).
template <class Visit>
bool with_format_named(const std::string& name, Visit&& visit) {
  bool found = false;
  const auto try_spec = [&](format_spec s) {
    if (found) return;
    with_format(s, [&]<class F>(std::type_identity<F> t) {
      if (!found && F::name() == name) {
        found = true;
        visit(t);
      }
    });
  };
  for (const auto& f : detail::kFormats) {
    format_spec s;
    s.name = std::string(f.name);
    switch (f.fam) {
      case detail::family::mx:
        for (const mx_rule r : {mx_rule::ocp, mx_rule::lqer})
          for (const int b : detail::to_vector(detail::mx_blocks{})) {
            s.rule = r;
            s.block = b;
            try_spec(s);
          }
        break;
      case detail::family::integer:
        for (const int_scheme sc : {int_scheme::symmetric, int_scheme::asymmetric})
          for (const scale_dtype d : {scale_dtype::f32, scale_dtype::f16})
            for (const int b : detail::to_vector(detail::int_blocks{})) {
              s.scheme = sc;
              s.scale = d;
              s.block = b;
              try_spec(s);
            }
        break;
      case detail::family::ggml:
        s.block = 32;
        try_spec(s);
        break;
    }
  }
  return found;
}

}  // namespace lqer::cli
