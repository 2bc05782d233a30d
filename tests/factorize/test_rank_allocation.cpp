// Per-layer ranks under a bit budget (factorize/rank_allocation.hpp):
// allocate_ranks against an exhaustive search (exactly optimal with equal
// step costs; within one step's gain of the optimum otherwise), its contract
// and errors; truncate() against factorize() at the smaller rank (bit for bit
// with the exact SVD and a diagonal policy, whose A = S⁻¹U is formed column by
// column); lowrank_bits against the stored matrices' storage_bytes().
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "factorize/synthetic.hpp"
#include "lqer/factorize/rank_allocation.hpp"

using namespace lqer;

namespace {

/// Every allocation of up to gains.size() steps per layer within `budget`: the best total gain.
double exhaustive_best(const std::vector<rank_candidates>& layers, double budget) {
  double best = 0;
  std::vector<std::size_t> steps(layers.size(), 0);
  const std::function<void(std::size_t, double, double)> go = [&](std::size_t l, double cost, double gain) {
    if (l == layers.size()) {
      best = std::max(best, gain);
      return;
    }
    double g = gain, c = cost;
    for (std::size_t s = 0;; ++s) {
      go(l + 1, c, g);
      if (s == layers[l].gains.size() || c + layers[l].step_cost > budget) break;
      c += layers[l].step_cost;
      g += layers[l].gains[s];
    }
  };
  go(0, 0, 0);
  return best;
}

/// Random concave gains: sorted descending.
std::vector<rank_candidates> random_layers(std::mt19937_64& rng, bool equal_costs) {
  std::uniform_int_distribution<int> n_layers(1, 4), n_steps(0, 4), cost(1, 5);
  std::exponential_distribution<double> gain(1.0);
  std::vector<rank_candidates> v(static_cast<std::size_t>(n_layers(rng)));
  for (auto& c : v) {
    c.step = 16;
    c.step_cost = equal_costs ? 3.0 : double(cost(rng));
    c.gains.resize(static_cast<std::size_t>(n_steps(rng)));
    for (double& g : c.gains) g = gain(rng);
    std::sort(c.gains.rbegin(), c.gains.rend());
  }
  return v;
}

void check_allocation(const std::vector<rank_candidates>& layers, double budget, const rank_allocation& a) {
  REQUIRE(a.ranks.size() == layers.size());
  double cost = 0, gain = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    REQUIRE(a.ranks[l] % layers[l].step == 0);
    const auto s = static_cast<std::size_t>(a.ranks[l] / layers[l].step);
    REQUIRE(s <= layers[l].gains.size());
    cost += double(s) * layers[l].step_cost;
    for (std::size_t j = 0; j < s; ++j) gain += layers[l].gains[j];  // a prefix: σ order
  }
  CHECK(cost <= budget);
  CHECK(cost == doctest::Approx(a.cost));
  CHECK(gain == doctest::Approx(a.gain));
}

}  // namespace

TEST_CASE("allocate_ranks: optimal with equal step costs, within one step's gain otherwise") {
  std::mt19937_64 rng(7);
  for (const bool equal : {true, false}) {
    for (int trial = 0; trial < 300; ++trial) {
      const auto layers = random_layers(rng, equal);
      const double budget = std::uniform_real_distribution<double>(0, 30)(rng);
      CAPTURE(equal);
      CAPTURE(trial);
      const rank_allocation a = allocate_ranks(layers, budget);
      check_allocation(layers, budget, a);
      const double best = exhaustive_best(layers, budget);
      // Sums of the same few doubles in other orders: a relative 1e-12 covers their rounding.
      if (equal) {
        CHECK(a.gain >= best * (1 - 1e-12));
      } else {
        double max_gain = 0;
        for (const auto& c : layers)
          if (!c.gains.empty()) max_gain = std::max(max_gain, c.gains.front());
        CHECK(a.gain >= (best - max_gain) * (1 - 1e-12));
      }
    }
  }
}

TEST_CASE("allocate_ranks: greedy order, whole budget, ties, and no budget") {
  std::vector<rank_candidates> layers(2);
  layers[0] = {{10, 1}, 2.0, 16};  // ratios 5, 0.5
  layers[1] = {{4, 3}, 1.0, 16};   // ratios 4, 3
  SUBCASE("the budget for three steps takes the three best ratios") {
    const auto a = allocate_ranks(layers, 4.0);
    CHECK(a.ranks == std::vector<index_t>{16, 32});
    CHECK(a.gain == 17.0);
  }
  SUBCASE("a step that does not fit is skipped, smaller ones still taken") {
    const auto a = allocate_ranks(layers, 1.5);  // layer 0's step (2 bits) never fits
    CHECK(a.ranks == std::vector<index_t>{0, 16});
  }
  SUBCASE("budget 0: rank 0 everywhere") {
    const auto a = allocate_ranks(layers, 0.0);
    CHECK(a.ranks == std::vector<index_t>{0, 0});
    CHECK(a.cost == 0.0);
  }
  SUBCASE("equal ratios go to the lower layer first") {
    std::vector<rank_candidates> tie(2, rank_candidates{{1.0}, 1.0, 8});
    CHECK(allocate_ranks(tie, 1.0).ranks == std::vector<index_t>{8, 0});
  }
  SUBCASE("unlimited budget: every step") { CHECK(allocate_ranks(layers, 1e9).ranks == std::vector<index_t>{32, 32}); }
}

TEST_CASE("allocate_ranks and rank_candidates: bad input is a value_error") {
  std::vector<rank_candidates> ok(1, rank_candidates{{2, 1}, 1.0, 16});
  CHECK_THROWS_AS(allocate_ranks(ok, -1.0), value_error);
  CHECK_THROWS_AS(allocate_ranks(ok, std::nan("")), value_error);
  auto bad = ok;
  bad[0].gains = {1, 2};
  CHECK_THROWS_WITH_AS(allocate_ranks(bad, 1.0), doctest::Contains("increase"), value_error);
  bad = ok;
  bad[0].gains = {-1};
  CHECK_THROWS_AS(allocate_ranks(bad, 1.0), value_error);
  bad = ok;
  bad[0].step_cost = 0;
  CHECK_THROWS_AS(allocate_ranks(bad, 1.0), value_error);
  bad = ok;
  bad[0].step = 0;
  CHECK_THROWS_AS(allocate_ranks(bad, 1.0), value_error);
  CHECK_THROWS_AS(rank_candidates::from_singular_values(std::vector<float>{1}, 0, 1.0), value_error);
}

TEST_CASE("rank_candidates::from_singular_values sums σ² per step") {
  const std::vector<float> s{4, 3, 2, 1, 0.5f};
  const auto c = rank_candidates::from_singular_values(s, 2, 10.0);
  CHECK(c.gains == std::vector<double>{25, 5});  // the partial last step (one σ) is not offered
  CHECK(c.step == 2);
  CHECK(c.step_cost == 10.0);
}

TEST_CASE("truncate: the rank-r layer of a rank-K factorization is factorize at rank r (exact SVD, mean_abs)") {
  const index_t out = 48, in = 80, big = 24;
  const matrix_rm w = test::heavy_tailed_weight(out, in, 11);
  activation_stats st(in);
  st.add_batch(test::llm_like_activations(200, in, 3, 12));
  const auto full = factorize<policy::mean_abs, exact_svd>(w, st, big);
  for (const index_t r : {index_t{0}, index_t{5}, index_t{16}, big}) {
    CAPTURE(r);
    const auto direct = factorize<policy::mean_abs, exact_svd>(w, st, r);
    const auto cut = truncate(full, r);
    REQUIRE(cut.rank() == r);
    CHECK(std::ranges::equal(cut.wq.codes(), direct.layer.wq.codes()));
    if (r > 0) {
      CHECK(std::ranges::equal(cut.a.codes(), direct.layer.a.codes()));
      CHECK(std::ranges::equal(cut.b.codes(), direct.layer.b.codes()));
      CHECK(std::ranges::equal(cut.a.scales(), direct.layer.a.scales()));
      CHECK(std::ranges::equal(cut.b.scales(), direct.layer.b.scales()));
      CHECK(lowrank_bits<default_lowrank_format>(in, out, r) ==
            8.0 * double(cut.a.storage_bytes() + cut.b.storage_bytes()));
    }
  }
  CHECK(lowrank_bits<default_lowrank_format>(in, out, 0) == 0.0);
  CHECK_THROWS_AS(truncate(full, big + 1), value_error);
  CHECK_THROWS_AS(truncate(full, -1), value_error);
}
