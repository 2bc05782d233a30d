// lqer Python package — fake_quantize over the format table
// (lqer/format/table.hpp): mxint2/3/4/8 (OCP or LQER rule, block 8–128), int4/int8
// (symmetric or with a zero point, f32 or f16 scales, block 8–128 or a whole
// row), llama.cpp's q4_0/q8_0. The rules and defaults are the lqer program's
// (`lqer quantize`), so the two give the same numbers for the same options.
#include "formats.hpp"

#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <lqer/format/table.hpp>
#include <lqer/tensor/quantized_matrix.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "common.hpp"

namespace lqer::py {

namespace {

/// Quantizes every row of x [..., cols] in blocks along the row and
/// dequantizes; returns the result, the format's full name and its bits per
/// weight (code bits + the scale's share of a block, as `lqer quantize` says).
std::tuple<numpy_out<float>, std::string, double> fake_quantize_2d(const f32_in& x, const std::string& format,
                                                                   std::optional<int> block,
                                                                   std::optional<std::string> rule,
                                                                   std::optional<std::string> scheme,
                                                                   std::optional<std::string> scale) {
  format_spec s;
  s.name = format;
  if (block) s.block = *block;
  if (rule) {
    const std::optional<mx_rule> r = parse_mx_rule(*rule);
    if (!r) throw value_error("rule must be 'ocp' or 'lqer', not '" + *rule + "'");
    s.rule = *r;
  }
  if (scheme) {
    if (*scheme != "sym" && *scheme != "asym")
      throw value_error("scheme must be 'sym' or 'asym', not '" + *scheme + "'");
    s.scheme = *scheme == "sym" ? int_scheme::symmetric : int_scheme::asymmetric;
  }
  if (scale) {
    if (*scale != "f32" && *scale != "f16") throw value_error("scale must be 'f32' or 'f16', not '" + *scale + "'");
    s.scale = *scale == "f32" ? scale_dtype::f32 : scale_dtype::f16;
  }
  s = resolve(s, rule.has_value(), scheme.has_value(), scale.has_value());
  std::vector<float> storage;
  std::vector<std::size_t> shape;
  const matrix_view<const float> xv = as_rows(x, storage, "fake_quantize: x", &shape);
  shape.push_back(static_cast<std::size_t>(xv.cols));
  std::vector<float> out(static_cast<std::size_t>(xv.rows * xv.cols));
  std::string name;
  double bits = 0;
  {
    const nb::gil_scoped_release release;
    with_format(s, [&]<class F>(std::type_identity<F>) {
      const auto q = quantized_matrix<F>::quantize(xv, block_axis::cols);
      q.dequantize(matrix_view<float>(out.data(), xv.rows, xv.cols));
      name = F::name();
      const index_t group = F::kBlock == kPerRow ? q.depth() : F::kBlock;
      bits = F::kBits + double(F::kScaleBits) / double(group);
    });
  }
  return {to_numpy(std::move(out), shape), name, bits};
}

}  // namespace

void bind_formats(nb::module_& m) {
  m.def("_fake_quantize_rows", &fake_quantize_2d, nb::arg("x"), nb::arg("format"), nb::arg("block").none(),
        nb::arg("rule").none(), nb::arg("scheme").none(), nb::arg("scale").none());
  m.def("format_names", &format_names, "The format names fake_quantize accepts.");
  m.def("format_help", &format_help, "Which blocks, rules and schemes each format family has.");
}

}  // namespace lqer::py
