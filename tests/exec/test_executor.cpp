// serial_executor and thread_pool_executor honour the parallel_for contract;
// the pool also under concurrent callers and repeated construction.
#include <doctest/doctest.h>

#include <thread>

#include "executor_checks.hpp"
#include "lqer/exec/thread_pool.hpp"

using namespace lqer;

TEST_CASE("serial_executor: contract") {
  serial_executor s;
  lqer_test::check_executor_contract(s);
  CHECK(serial_executor::concurrency() == 1);
}

TEST_CASE("thread_pool_executor: contract with 1, 2, 3 and 5 threads") {
  for (int t : {1, 2, 3, 5}) {  // 5 > cores here: oversubscribed
    INFO("threads=" << t);
    thread_pool_executor pool(t);
    CHECK(pool.concurrency() == t);
    lqer_test::check_executor_contract(pool);
  }
  thread_pool_executor def;
  CHECK(def.concurrency() >= 1);
  CHECK_THROWS_AS(thread_pool_executor(-1), value_error);
}

TEST_CASE("thread_pool_executor: callers on several threads are serialized, not lost") {
  thread_pool_executor pool(2);
  std::atomic<long> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 200; ++rep)
        pool.parallel_for(17, [&](index_t b, index_t e) { total.fetch_add(e - b); });
    });
  for (auto& t : callers) t.join();
  CHECK(total.load() == 3L * 200 * 17);
}

TEST_CASE("thread_pool_executor: many short calls and quick destruction") {
  for (int i = 0; i < 20; ++i) {
    thread_pool_executor pool(2);
    std::atomic<int> n{0};
    for (int rep = 0; rep < 50; ++rep) pool.parallel_for(2, [&](index_t b, index_t e) { n.fetch_add(int(e - b)); });
    CHECK(n.load() == 100);
  }
}
