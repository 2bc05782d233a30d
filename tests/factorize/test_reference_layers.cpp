// The LQER authors' reference layers (tests/data/layer_{small,mid}_*, made with
// their quantizer and a float32 torch.linalg.svd; see tests/data/README.md):
// Wq bit for bit, the plain W4A8 output, and the LQER / L²QER outputs.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>

#include "factorize/synthetic.hpp"
#include "lqer/factorize/factorize.hpp"
#include "lqer/layer/reference_forward.hpp"

using namespace lqer;
using lqer::test::gamma_n;
using lqer::test::kUnitFloat;

namespace {

struct reference_layer {
  std::string name;
  index_t rank = 0;
  matrix_rm w, xcal, xtest, wq, yfp, y_plain, y_lqer, y_l2qer;
  double rel_plain = 0, rel_lqer = 0, rel_l2qer = 0;  // manifest.json: ‖Y − Yfp‖ / ‖Yfp‖
};

reference_layer load(const std::string& name) {
  std::ifstream f(std::string(LQER_TEST_DATA_DIR) + "/manifest.json");
  REQUIRE(f.good());
  const nlohmann::json manifest = nlohmann::json::parse(f);
  reference_layer l;
  l.name = name;
  l.rank = manifest.at(name + "_W").at("rank").get<index_t>();
  l.rel_plain = manifest.at(name + "_Y_plain").at("rel_err_vs_fp").get<double>();
  l.rel_lqer = manifest.at(name + "_Y_lqer").at("rel_err_vs_fp").get<double>();
  l.rel_l2qer = manifest.at(name + "_Y_l2qer").at("rel_err_vs_fp").get<double>();
  l.w = test::load_matrix(name + "_W");
  l.xcal = test::load_matrix(name + "_Xcal");
  l.xtest = test::load_matrix(name + "_Xtest");
  l.wq = test::load_matrix(name + "_Wq");
  l.yfp = test::load_matrix(name + "_Yfp");
  l.y_plain = test::load_matrix(name + "_Y_plain");
  l.y_lqer = test::load_matrix(name + "_Y_lqer");
  l.y_l2qer = test::load_matrix(name + "_Y_l2qer");
  return l;
}

template <class L>
matrix_rm forward(const L& layer, const matrix_rm& x, correction_mode mode) {
  matrix_rm y(x.rows(), layer.out_features());
  reference_forward(layer, view_of(x), view_of(y), mode);
  return y;
}

}  // namespace

TEST_CASE("reference layers: Wq, plain W4A8, LQER and L²QER outputs") {
  for (const char* layer_name : {"layer_small", "layer_mid"}) {
    const std::string name = layer_name;
    CAPTURE(name);
    const reference_layer l = load(name);
    activation_stats st(l.w.cols());
    st.add_batch(l.xcal);  // one batch: see test_scale_policy, "L²QER scale of the LQER reference"

    // Wq: MXINT4 block 16 along `in`, LQER rule — bit for bit (README: exclude
    // |w| < 1e-7, which the reference passes through unquantized).
    const auto plain = factorize<policy::identity, exact_svd>(l.w, st, 0);
    const matrix_rm wq = dequantize(plain.layer.wq);
    index_t differ = 0;
    for (index_t i = 0; i < wq.size(); ++i)
      if (std::fabs(l.w.data()[i]) >= 1e-7f && wq.data()[i] != l.wq.data()[i]) ++differ;
    CHECK(differ == 0);

    // Plain W4A8 (paper mode, rank 0): Y = Q8(x)·Wqᵀ. Both sides add the same
    // exactly representable products xq_j·wq_j, so they differ only in
    // summation order: the reference's float32 matmul is within γ_in·Σ|xq||wq|
    // of the exact sum, ours (exact 16-element block dots, then in/16 float
    // additions) within γ_{in/16}·Σ|xq||wq|.
    const matrix_rm y0 = forward(plain.layer, l.xtest, correction_mode::paper);
    const matrix_rm xq = fake_quantize<default_activation_format>(l.xtest);
    const Eigen::MatrixXd bound = (gamma_n(double(l.w.cols()), kUnitFloat) + gamma_n(double(l.w.cols()) / 16, kUnitFloat)) *
                                  (xq.cast<double>().cwiseAbs() * wq.cast<double>().cwiseAbs().transpose());
    CHECK(((y0.cast<double>() - l.y_plain.cast<double>()).cwiseAbs().array() <= bound.array()).all());
    MESSAGE(name << ": plain W4A8 output, max |ours − reference| = "
                 << (y0 - l.y_plain).cwiseAbs().maxCoeff() << " (often exactly 0)");

    // LQER and L²QER with the exact solver, paper mode. The reference's A, B
    // come from a float32 torch SVD, ours from a double SVD rounded to float:
    // the same factors up to rounding, which can flip a few 8-bit codes of A, B,
    // t = Q8(xq A) or the rounded correction Q8(t B) by one step. One step is
    // 2^-(8-1) of its block's maximum, so the outputs may differ by about
    // 2^-7 of the correction term, ‖Y_ref − Y_plain‖ — and by the triangle
    // inequality their relative errors against Yfp by the same over ‖Yfp‖.
    const auto lq = factorize<policy::identity, exact_svd>(l.w, st, l.rank);
    const auto l2 = factorize<policy::mean_abs, exact_svd>(l.w, st, l.rank);
    struct row {
      const char* what;
      matrix_rm y, ref;
      double manifest_rel;
    };
    const row rows[] = {{"LQER", forward(lq.layer, l.xtest, correction_mode::paper), l.y_lqer, l.rel_lqer},
                        {"L2QER", forward(l2.layer, l.xtest, correction_mode::paper), l.y_l2qer, l.rel_l2qer}};
    const double yfp_norm = l.yfp.cast<double>().norm();
    CHECK(std::fabs(test::rel_error(l.y_plain, l.yfp) - l.rel_plain) <= 1e-6 * l.rel_plain);  // the manifest's definition
    for (const row& r : rows) {
      const std::string what = r.what;
      CAPTURE(what);
      const double correction = (r.ref.cast<double>() - l.y_plain.cast<double>()).norm();
      const double step = 0x1.0p-7 * correction;
      const double diff = (r.y.cast<double>() - r.ref.cast<double>()).norm();
      const double rel = test::rel_error(r.y, l.yfp);
      MESSAGE(name << " " << what << ": rel. error vs Yfp " << rel << " (reference " << r.manifest_rel
                   << "), ‖Y − Y_ref‖/‖Y_ref‖ = " << diff / r.ref.cast<double>().norm() << ", allowed "
                   << step / r.ref.cast<double>().norm());
      CHECK(diff <= step);
      CHECK(std::fabs(rel - r.manifest_rel) <= step / yfp_norm);
    }
    CHECK(l.rel_plain > l.rel_lqer);
    CHECK(l.rel_lqer > l.rel_l2qer);
  }
}
