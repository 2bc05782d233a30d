// The parallel_for contract (exec/executor.hpp), checked for any executor.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "lqer/exec/executor.hpp"

namespace lqer_test {

template <class E>
void check_executor_contract(E& exec) {
  using lqer::index_t;
  for (index_t n : {0, 1, 2, 3, 7, 64, 1001}) {
    INFO("n_tasks=" << n);
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    std::atomic<int> calls{0}, empty{0};
    exec.parallel_for(n, [&](index_t b, index_t e) {
      calls.fetch_add(1);
      if (b >= e) empty.fetch_add(1);
      for (index_t i = b; i < e; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
    });
    int bad = 0;
    for (auto& h : hits) bad += h.load() != 1;
    CHECK(bad == 0);  // each task exactly once
    CHECK(empty.load() == 0);
    CHECK((n == 0) == (calls.load() == 0));
  }
  // Writes made by tasks are visible after return (plain, non-atomic stores).
  std::vector<double> out(513, 0.0);
  exec.parallel_for(513, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) out[static_cast<std::size_t>(i)] = double(i) * 0.5;
  });
  double sum = 0;
  for (double v : out) sum += v;
  CHECK(sum == 0.5 * 512 * 513 / 2);
  // An exception in a task reaches the caller, and the executor stays usable.
  CHECK_THROWS_AS(exec.parallel_for(100,
                                    [&](index_t b, index_t) {
                                      if (b == 0) throw std::runtime_error("task 0 failed");
                                    }),
                  std::runtime_error);
  std::atomic<int> after{0};
  exec.parallel_for(10, [&](index_t b, index_t e) { after.fetch_add(int(e - b)); });
  CHECK(after.load() == 10);
  // Nested parallel_for from inside a task runs (inline) without deadlock.
  std::atomic<int> nested{0};
  exec.parallel_for(4, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) exec.parallel_for(5, [&](index_t b2, index_t e2) { nested.fetch_add(int(e2 - b2)); });
  });
  CHECK(nested.load() == 20);
}

}  // namespace lqer_test
