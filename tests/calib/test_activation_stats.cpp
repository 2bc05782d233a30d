// activation_stats: exact values on a hand example, streaming = one-shot,
// merged = single pass bit for bit (several splits, with and without the Gram
// matrix, through files too), the statistics file's round trip and every way
// a file can be bad, and every error path.
//
// Tolerances (streaming against one-shot only: different batches, so different
// partial sums): every statistic is a sum of T terms that are exact in double
// (|x| and x² of a float, and x_i·x_j, a 48-bit product). Two summation orders
// of the same terms each lie within γ_T·Σ|terms| of the exact sum, so they
// differ by at most 2γ_T·Σ|terms| (γ_T with double's u = 2^-53). Merged
// against single pass over the same batches is compared bit for bit: the file
// comment of activation_stats.hpp says why that holds (double-double totals of
// per-batch partials) and when it could fail (a total within ~N·2^-104 of a
// rounding boundary: about N·2^-50 per entry, never in these tests).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <cstring>
#include <functional>
#include <filesystem>
#include <map>
#include <limits>
#include <string>
#include <vector>

#include "factorize/synthetic.hpp"
#include "lqer/calib/activation_stats.hpp"
#include "lqer/io/safetensors.hpp"
#include "lqer/io/sha256.hpp"
#include "support/safetensors_edit.hpp"

using namespace lqer;
using lqer::test::gamma_n;
using lqer::test::kUnitDouble;

namespace {
matrix_view<const float> rows_of(const matrix_rm& x, index_t r0, index_t n) {
  return matrix_view<const float>(x.data() + r0 * x.cols(), n, static_cast<index_t>(x.cols()));
}
}  // namespace

TEST_CASE("hand example: every statistic") {
  // Two batches of a 3-channel layer.
  const float b0[] = {1, -2, 0,  //
                      3, 4, 0};
  const float b1[] = {-5, 0, 0};
  activation_stats s(3, gram_mode::on);
  s.add_batch(matrix_view<const float>(b0, 2, 3));
  s.add_batch(matrix_view<const float>(b1, 1, 3));
  CHECK(s.tokens() == 3);
  CHECK(s.batches() == 2);
  // batch means of |x|: (2, 3, 0) and (5, 0, 0) → max (5, 3, 0).
  CHECK(s.batch_mean_abs_max() == std::vector<double>{5.0, 3.0, 0.0});
  CHECK(s.mean_abs() == std::vector<double>{3.0, 2.0, 0.0});
  CHECK(s.mean_square() == std::vector<double>{35.0 / 3, 20.0 / 3, 0.0});
  CHECK(s.rms()[0] == doctest::Approx(std::sqrt(35.0 / 3)).epsilon(1e-15));
  const Eigen::MatrixXd r = s.gram();
  Eigen::MatrixXd want(3, 3);
  want << 35, 10, 0,  //
      10, 20, 0,      //
      0, 0, 0;
  want /= 3;
  CHECK((r - want).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("streaming equals one-shot, and merged equals single") {
  const index_t tokens = 300, in = 40;
  const matrix_rm x = test::llm_like_activations(tokens, in, 2, 7);
  const index_t cuts[] = {0, 13, 50, 51, 120, 200, 257, 300};  // 7 batches of uneven sizes

  activation_stats one(in, gram_mode::on);
  one.add_batch(x);
  activation_stats stream(in, gram_mode::on), first(in, gram_mode::on), second(in, gram_mode::on);
  std::vector<double> batch_max(static_cast<std::size_t>(in), 0.0);
  for (int b = 0; b + 1 < 8; ++b) {
    const auto v = rows_of(x, cuts[b], cuts[b + 1] - cuts[b]);
    stream.add_batch(v);
    (b < 3 ? first : second).add_batch(v);
    for (index_t c = 0; c < in; ++c) {
      long double sum = 0;  // an independent per-batch mean
      for (index_t t = cuts[b]; t < cuts[b + 1]; ++t) sum += std::fabs(static_cast<long double>(x(t, c)));
      batch_max[static_cast<std::size_t>(c)] =
          std::max(batch_max[static_cast<std::size_t>(c)], static_cast<double>(sum / (cuts[b + 1] - cuts[b])));
    }
  }
  activation_stats merged = first;
  merged.merge(second);

  // One batch: the per-batch statistic is the global mean, bit for bit.
  CHECK(one.batch_mean_abs_max() == one.mean_abs());

  // Streaming against one-shot: other batches, so other partial sums; within the rounding bound.
  const double g2 = 2 * gamma_n(double(tokens), kUnitDouble);
  const Eigen::MatrixXd abs_x = x.cast<double>().cwiseAbs();
  const Eigen::MatrixXd gram_bound = g2 * (abs_x.transpose() * abs_x) / double(tokens);
  CHECK(stream.tokens() == tokens);
  CHECK(stream.batches() == 7);
  const auto ma = stream.mean_abs(), ma1 = one.mean_abs(), ms = stream.mean_square(), ms1 = one.mean_square();
  for (index_t c = 0; c < in; ++c) {
    const auto u = static_cast<std::size_t>(c);
    CHECK(std::fabs(ma[u] - ma1[u]) <= g2 * ma1[u]);
    CHECK(std::fabs(ms[u] - ms1[u]) <= g2 * ms1[u]);
    // ... and equal to the independent long-double computation up to one
    // rounding of a T-term double sum.
    CHECK(std::fabs(stream.batch_mean_abs_max()[u] - batch_max[u]) <= g2 * batch_max[u]);
  }
  CHECK(((stream.gram() - one.gram()).cwiseAbs().array() <= gram_bound.array()).all());

  // Merged against streaming: the same batches, bit for bit.
  CHECK(merged.tokens() == tokens);
  CHECK(merged.batches() == 7);
  CHECK(merged.mean_abs() == stream.mean_abs());
  CHECK(merged.mean_square() == stream.mean_square());
  CHECK(merged.batch_mean_abs_max() == stream.batch_mean_abs_max());
  CHECK(merged.gram() == stream.gram());
  // The per-batch statistic really is per batch: here it exceeds the global mean.
  CHECK(stream.batch_mean_abs_max()[3] > one.mean_abs()[3] * (1 + 1e-3));
}

namespace {

/// Every statistic of two accumulators, compared bit for bit.
void check_identical(const activation_stats& a, const activation_stats& b) {
  CHECK(a.in_features() == b.in_features());
  CHECK(a.tokens() == b.tokens());
  CHECK(a.batches() == b.batches());
  CHECK(a.has_gram() == b.has_gram());
  if (a.empty() || b.empty()) return;
  CHECK(a.mean_abs() == b.mean_abs());
  CHECK(a.mean_square() == b.mean_square());
  CHECK(a.batch_mean_abs_max() == b.batch_mean_abs_max());
  if (a.has_gram() && b.has_gram()) {
    const Eigen::MatrixXd ga = a.gram(), gb = b.gram();
    CHECK(ga == gb);
  }
}

/// Batch boundaries: `n` batches of uneven sizes covering [0, tokens).
std::vector<index_t> uneven_cuts(index_t tokens, int n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<index_t> c{0};
  std::uniform_int_distribution<index_t> pick(1, tokens - 1);
  std::set<index_t> inner;
  while (static_cast<int>(inner.size()) < n - 1) inner.insert(pick(gen));
  c.insert(c.end(), inner.begin(), inner.end());
  c.push_back(tokens);
  return c;
}

}  // namespace

TEST_CASE("merged statistics equal single-pass statistics exactly: several splits, with and without the Gram matrix") {
  // An LLM-like layer input: 96 channels (two Gram panels of 64 rows), four
  // outlier channels 20–50x larger, 37 batches of uneven sizes.
  const index_t tokens = 3000, in = 96;
  const matrix_rm x = test::llm_like_activations(tokens, in, 4, 11);
  const std::vector<index_t> cuts = uneven_cuts(tokens, 37, 5);
  const int nb = static_cast<int>(cuts.size()) - 1;
  const auto batch = [&](int b) { return rows_of(x, cuts[b], cuts[b + 1] - cuts[b]); };

  for (const gram_mode gm : {gram_mode::off, gram_mode::on}) {
    const bool with_gram = gm == gram_mode::on;
    CAPTURE(with_gram);
    activation_stats single(in, gm);
    for (int b = 0; b < nb; ++b) single.add_batch(batch(b));

    // Jobs: contiguous runs of batches (2, 3, 5 and 37 jobs: one batch each),
    // round-robin assignment (not contiguous), merged left to right and as a tree.
    struct split {
      const char* name;
      int jobs;
      bool round_robin;
      bool tree;
    };
    for (const split& sp : {split{"2 contiguous", 2, false, false}, split{"3 contiguous", 3, false, false},
                            split{"5 contiguous, tree", 5, false, true}, split{"37 single batches", 37, false, false},
                            split{"37 single batches, tree", 37, false, true}, split{"4 round-robin", 4, true, false},
                            split{"7 round-robin, tree", 7, true, true}}) {
      CAPTURE(sp.name);
      const auto job_of = [&](int b) {
        return sp.round_robin ? b % sp.jobs : static_cast<int>(static_cast<long>(b) * sp.jobs / nb);
      };
      std::vector<activation_stats> job(static_cast<std::size_t>(sp.jobs), activation_stats(in, gm));
      for (int b = 0; b < nb; ++b) job[static_cast<std::size_t>(job_of(b))].add_batch(batch(b));
      activation_stats merged;
      if (!sp.tree) {
        for (const auto& j : job) merged.merge(j);
      } else {
        while (job.size() > 1) {  // pairwise, as a reduction over machines would
          std::vector<activation_stats> next;
          for (std::size_t i = 0; i + 1 < job.size(); i += 2) {
            next.push_back(job[i]);
            next.back().merge(job[i + 1]);
          }
          if (job.size() % 2) next.push_back(job.back());
          job = std::move(next);
        }
        merged = job.front();
      }
      check_identical(merged, single);
      // Through files: each job's accumulator saved and loaded, then merged.
      activation_stats from_files;
      for (int j = 0; j < sp.jobs; ++j) {
        activation_stats part(in, gm);
        for (int b = 0; b < nb; ++b)
          if (job_of(b) == j) part.add_batch(batch(b));
        from_files.merge(activation_stats::load(io::safetensors_file::from_bytes(part.encode(), "part.safetensors")));
      }
      check_identical(from_files, single);
    }
  }

  // The test has teeth: the same per-batch partial sums added in plain double
  // in the two groupings of "5 contiguous" (as the accumulator did before it
  // kept double-double totals) do not all agree.
  int differ = 0;
  for (index_t c = 0; c < in; ++c) {
    std::vector<double> partial;
    for (int b = 0; b < nb; ++b) {
      double p = 0;
      for (index_t t = cuts[b]; t < cuts[b + 1]; ++t) p += static_cast<double>(x(t, c)) * static_cast<double>(x(t, c));
      partial.push_back(p);
    }
    double seq = 0, grouped = 0;
    for (const double p : partial) seq += p;
    for (int j = 0; j < 5; ++j) {
      double g = 0;
      for (int b = 0; b < nb; ++b)
        if (static_cast<int>(static_cast<long>(b) * 5 / nb) == j) g += partial[static_cast<std::size_t>(b)];
      grouped += g;
    }
    differ += seq != grouped;
  }
  MESSAGE("plain double sums of the same partials differ between the groupings in ", differ, " of ", in,
          " channels; the double-double totals in none");
  CHECK(differ > 0);
}

TEST_CASE("the Gram matrix matches an independent long-double sum within the rounding bound") {
  // Panels of 64 rows: 150 channels cross two panel boundaries and end in a partial one.
  const index_t tokens = 70, in = 150;
  const matrix_rm x = test::llm_like_activations(tokens, in, 3, 21);
  activation_stats s(in, gram_mode::on);
  s.add_batch(x);
  const Eigen::MatrixXd g = s.gram();
  const double g1 = gamma_n(double(tokens), kUnitDouble);
  for (index_t i = 0; i < in; ++i)
    for (index_t j = 0; j < in; ++j) {
      long double exact = 0, abs_sum = 0;
      for (index_t t = 0; t < tokens; ++t) {
        const long double p = static_cast<long double>(x(t, i)) * static_cast<long double>(x(t, j));
        exact += p;
        abs_sum += std::fabs(p);
      }
      // One T-term double sum (γ_T·Σ|terms|), then a division by T and the
      // rounding of the reference itself (an ulp of the result each, at most).
      const double want = static_cast<double>(exact / tokens);
      const double bound = g1 * static_cast<double>(abs_sum) / double(tokens) + 0x1p-51 * std::fabs(want);
      CHECK(std::fabs(g(i, j) - want) <= bound);
    }
}

TEST_CASE("merge with a default-constructed accumulator, and the Eigen overload") {
  const matrix_rm x = test::llm_like_activations(20, 8, 1, 3);
  activation_stats a(8), empty;
  a.add_batch(x);
  activation_stats b;
  b.merge(a);  // takes a's shape
  CHECK(b.in_features() == 8);
  CHECK(b.mean_abs() == a.mean_abs());
  a.merge(empty);  // no-op
  CHECK(a.tokens() == 20);

  activation_stats c(8);
  const Eigen::MatrixXf col_major = x;  // a different layout, same values
  c.add_batch(col_major);
  CHECK(c.mean_abs() == a.mean_abs());
  CHECK(c.batch_mean_abs_max() == a.batch_mean_abs_max());
}

TEST_CASE("errors name what is wrong, and leave the accumulator unchanged") {
  matrix_rm x = matrix_rm::Ones(4, 5);
  activation_stats s(5, gram_mode::on);
  s.add_batch(x);
  x(2, 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(s.add_batch(x), "activation_stats: batch 1: element (2, 3) is NaN", value_error);
  x(2, 3) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(s.add_batch(x), "activation_stats: batch 1: element (2, 3) is -Inf", value_error);
  CHECK(s.tokens() == 4);
  CHECK(s.batches() == 1);
  CHECK(s.mean_abs() == std::vector<double>(5, 1.0));

  const matrix_rm narrow = matrix_rm::Ones(4, 6);
  CHECK_THROWS_AS(s.add_batch(narrow), shape_error);
  CHECK_THROWS_AS(s.add_batch(matrix_view<const float>(x.data(), 0, 5)), shape_error);
  CHECK_THROWS_AS(activation_stats(0), value_error);
  CHECK_THROWS_AS(activation_stats().add_batch(x), shape_error);

  activation_stats other(6), no_gram(5);
  CHECK_THROWS_AS(s.merge(other), shape_error);
  CHECK_THROWS_AS(s.merge(no_gram), shape_error);
  CHECK_THROWS_AS(no_gram.gram(), value_error);
  CHECK_THROWS_AS(no_gram.mean_abs(), value_error);  // no tokens
}

// ---------------------------------------------------------------------------
// Statistics files

namespace {

/// A fresh directory under the system temp directory, removed when the test ends.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("lqer_test_stats_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

using test::edited;
using edit = test::safetensors_edit;

edit meta(const std::string& key, const std::string& value) { return edit{}.set(key, value); }
edit drop(const std::string& tensor) {
  edit e;
  e.drop.insert(tensor);
  return e;
}

activation_stats load_bytes(const std::vector<std::byte>& b) {
  return activation_stats::load(io::safetensors_file::from_bytes(b, "stats.safetensors"));
}

}  // namespace

TEST_CASE("statistics files: a round trip keeps every bit, and accumulation goes on from it") {
  const index_t in = 70;
  const matrix_rm x = test::llm_like_activations(400, in, 2, 3);
  for (const gram_mode gm : {gram_mode::off, gram_mode::on}) {
    activation_stats a(in, gm);
    a.add_batch(rows_of(x, 0, 150));
    a.add_batch(rows_of(x, 150, 100));
    temp_dir dir;
    const auto path = dir.path / "s.safetensors";
    a.save(path);
    activation_stats b = activation_stats::load(path);
    check_identical(b, a);
    CHECK(b.encode() == a.encode());  // hi, lo, maxima and counts: the same file
    a.add_batch(rows_of(x, 250, 150));
    b.add_batch(rows_of(x, 250, 150));
    check_identical(b, a);
    // The file is a safetensors file any reader opens; its metadata says what it is.
    const io::safetensors_file f = io::safetensors_file::open(path);
    CHECK(f.metadata().at("lqer.schema") == "lqer.activation_stats");
    CHECK(f.metadata().at("lqer.schema_version") == "1");
    CHECK(f.metadata().at("lqer.stats.in_features") == "70");
    CHECK(f.metadata().at("lqer.stats.tokens") == "250");
    CHECK(f.metadata().at("lqer.stats.gram") == (gm == gram_mode::on ? "true" : "false"));
    CHECK(f.tensor("sum_abs.hi").shape == std::vector<index_t>{in});
    if (gm == gram_mode::on) CHECK(f.tensor("gram.hi").shape == std::vector<index_t>{in * (in + 1) / 2});
  }
  // An accumulator without tokens saves and loads; a default-constructed one has no width to save.
  const activation_stats none(5, gram_mode::on);
  const activation_stats back = load_bytes(none.encode());
  CHECK(back.in_features() == 5);
  CHECK(back.empty());
  CHECK_THROWS_AS(activation_stats().encode(), value_error);
}

TEST_CASE("statistics files: every way a file can be bad is a typed error naming the file") {
  activation_stats a(6, gram_mode::on);
  a.add_batch(test::llm_like_activations(10, 6, 1, 2));
  const std::vector<std::byte> good = a.encode();
  CHECK_NOTHROW(load_bytes(edited(good, edit{})));

  struct bad {
    const char* name;
    edit e;
    const char* needle;
    int kind;  // 0 parse_error, 1 unsupported_error
  };
  const auto poke_double = [](const std::string& tensor, std::size_t i, double v) {
    edit e;
    e.data[tensor] = test::put<double>(i, v);
    return e;
  };
  const edit wrong_lo = poke_double("sum_sq.lo", 2, 1.0);  // |lo| above half an ulp of hi: not normalized
  const edit negative = poke_double("sum_abs.hi", 1, -3.0);
  const edit nan = poke_double("batch_mean_abs_max", 0, std::numeric_limits<double>::quiet_NaN());
  const edit huge = poke_double("gram.lo", 0, 0x1p600);
  const edit neg_diag = poke_double("gram.hi", 2, -1.0);  // (1, 1)
  edit short_vec;
  short_vec.shape["sum_sq.hi"] = {3, 2};
  edit poke = poke_double("gram.hi", 4, 12345.0);
  poke.keep_checksums = true;
  const std::vector<bad> cases = {
      {"checksum mismatch", poke, "checksum mismatch in tensor \"gram.hi\"", 0},
      {"unknown schema version", meta("lqer.schema_version", "2"), "schema version 2", 1},
      {"not a statistics file", meta("lqer.schema", "lqer.checkpoint"), "not an lqer statistics file", 0},
      {"no schema key", meta("lqer.schema", ""), "lqer.schema", 0},
      {"missing tensor", drop("sum_sq.lo"), "missing tensor \"sum_sq.lo\"", 0},
      {"missing Gram tensor", drop("gram.lo"), "missing tensor \"gram.lo\"", 0},
      {"Gram tensors without gram", meta("lqer.stats.gram", "false"), "gram.hi", 0},
      {"width disagrees with the tensors", meta("lqer.stats.in_features", "7"), "sum_abs.hi", 0},
      {"a vector of the wrong shape", short_vec, "sum_sq.hi", 0},
      {"width 0", meta("lqer.stats.in_features", "0"), "in_features", 0},
      {"width not a number", meta("lqer.stats.in_features", "6x"), "in_features", 0},
      {"more batches than tokens", meta("lqer.stats.batches", "11"), "every batch", 0},
      {"tokens without batches", meta("lqer.stats.batches", "0"), "every batch", 0},
      {"gram neither true nor false", meta("lqer.stats.gram", "yes"), "lqer.stats.gram", 0},
      {"unknown lqer key", meta("lqer.stats.mean", "1"), "unknown metadata key", 0},
      {"missing count", meta("lqer.stats.tokens", ""), "lqer.stats.tokens", 0},
      {"a pair that is not normalized", wrong_lo, "sum_sq", 0},
      {"a negative sum of magnitudes", negative, "sum_abs", 0},
      {"NaN", nan, "batch_mean_abs_max", 0},
      {"a value beyond any real sum", huge, "gram.lo", 0},
      {"a negative Gram diagonal", neg_diag, "diagonal entry 1", 0},
  };
  for (const bad& c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    const std::vector<std::byte> bytes = edited(good, c.e);
    if (c.kind == 1)
      CHECK_THROWS_WITH_AS(load_bytes(bytes), doctest::Contains(c.needle), unsupported_error);
    else
      CHECK_THROWS_WITH_AS(load_bytes(bytes), doctest::Contains(c.needle), parse_error);
    CHECK_THROWS_WITH_AS(load_bytes(bytes), doctest::Contains("stats.safetensors"), error);
  }
  // Checksums may be skipped on request: then the poked file loads.
  io::load_options no_check;
  no_check.verify_checksums = false;
  CHECK_NOTHROW(activation_stats::load(io::safetensors_file::from_bytes(edited(good, poke), "s"), no_check));
  // A truncated file, and a missing one.
  std::vector<std::byte> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(good.size() - 9));
  CHECK_THROWS_WITH_AS(load_bytes(cut), doctest::Contains("truncated"), parse_error);
  CHECK_THROWS_AS(activation_stats::load("/nonexistent/stats.safetensors"), io_error);
}
