// openmp_executor honours the parallel_for contract (built only with OpenMP).
#include <doctest/doctest.h>

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
