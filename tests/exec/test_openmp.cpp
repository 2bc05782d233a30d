// openmp_executor honours the parallel_for contract (built only with OpenMP).
#include <doctest/doctest.h>

#include <atomic>
#include <limits>

#include "executor_checks.hpp"
#include "lqer/exec/openmp.hpp"

using namespace lqer;

TEST_CASE("openmp_executor: contract with the default and with 2 threads") {
  openmp_executor def;
  lqer_test::check_executor_contract(def);
  openmp_executor two{2};
  CHECK(two.concurrency() == 2);
  lqer_test::check_executor_contract(two);
}

TEST_CASE("openmp_executor: task ranges cover huge n without overflow") {
  openmp_executor two{2};
  const index_t n = std::numeric_limits<index_t>::max() - 3;
  std::atomic<index_t> covered{0};
  std::atomic<int> calls{0};
  two.parallel_for(n, [&](index_t b, index_t e) {
    calls.fetch_add(1);
    covered.fetch_add(e - b);
  });
  CHECK(calls.load() == 2);
  CHECK(covered.load() == n);
}
