// serial_executor and thread_pool_executor honour the parallel_for contract;
// the pool also under concurrent callers and repeated construction;
// executor_ref forwards both the contract and concurrency().
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

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

namespace {
/// An executor without concurrency(): the concept does not require it.
struct plain_executor {
  template <class F>
  void parallel_for(index_t n, F&& fn) const {
    if (n > 0) fn(index_t{0}, n);
  }
};
}  // namespace

TEST_CASE("executor_ref: forwards parallel_for, and concurrency() where the executor has it (else 0: unknown)") {
  serial_executor s;
  thread_pool_executor three(3);
  plain_executor plain;
  CHECK(concurrency_of(s) == 1);
  CHECK(concurrency_of(three) == 3);
  CHECK(concurrency_of(plain) == 0);
  CHECK(executor_ref(s).concurrency() == 1);
  CHECK(executor_ref(three).concurrency() == 3);
  CHECK(executor_ref(plain).concurrency() == 0);
  executor_ref r(three);
  lqer_test::check_executor_contract(r);
  executor_ref rp(plain);
  lqer_test::check_executor_contract(rp);
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

// ---------------------------------------------------------------------------
// The claim protocol under changing load (issue #19: a worker still in the
// previous call paired its generation with the next call's larger chunk
// count: chunks ran twice or not at all, parallel_for hung or returned while
// a task still ran). Every call records each task's executions in its own
// counters, which are checked again after all calls, so a task that runs late
// (after its parallel_for returned) is caught as well as one that runs twice.

namespace {

using lqer::index_t;

// Calls of changing size: growing, shrinking, and around the chunk limits.
constexpr index_t kSizes[] = {2, 3, 64, 7, 1001, 5, 2, 40, 9, 4096, 3, 17, 8191, 2, 33};

struct call_record {
  std::vector<std::atomic<int>> hits;
  explicit call_record(index_t n) : hits(static_cast<std::size_t>(n)) {}
};

// Runs `calls` calls on `pool` from this thread; returns the number of tasks
// that did not run exactly once, counted after every call has returned.
int run_changing_calls(thread_pool_executor& pool, int calls, int salt, std::atomic<int>& running_after_return) {
  std::vector<std::unique_ptr<call_record>> records;
  records.reserve(static_cast<std::size_t>(calls));
  std::atomic<int> running{0};
  for (int i = 0; i < calls; ++i) {
    const index_t n = kSizes[static_cast<std::size_t>(i + salt) % std::size(kSizes)];
    records.push_back(std::make_unique<call_record>(n));
    call_record& rec = *records.back();
    pool.parallel_for(n, [&](index_t b, index_t e) {
      running.fetch_add(1);
      for (index_t t = b; t < e; ++t) rec.hits[static_cast<std::size_t>(t)].fetch_add(1);
      running.fetch_sub(1);
    });
    if (running.load() != 0) running_after_return.fetch_add(1);
  }
  int bad = 0;
  for (const auto& rec : records)
    for (const auto& h : rec->hits) bad += h.load() != 1;
  return bad;
}

// A hang is the failure mode of a lost chunk: end the test with a message
// instead of waiting for ctest's timeout.
class watchdog {
 public:
  explicit watchdog(int seconds)
      : thread_([this, seconds] {
          std::unique_lock lock(mutex_);
          if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_; })) {
            std::fputs("thread_pool_executor stress: no progress for the watchdog's time (a hang)\n", stderr);
            std::_Exit(3);
          }
        }) {}
  ~watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace

TEST_CASE("thread_pool_executor: growing and shrinking chunk counts, each task exactly once") {
  watchdog dog(120);
  for (int threads : {2, 3, 5, 8}) {  // 5 and 8 oversubscribe two cores: workers lag behind
    INFO("threads=" << threads);
    thread_pool_executor pool(threads);
    std::atomic<int> early{0};
    CHECK(run_changing_calls(pool, 3000, threads, early) == 0);
    CHECK(early.load() == 0);  // no task still running when parallel_for returned
  }
}

TEST_CASE("thread_pool_executor: several callers with changing loads share one pool") {
  watchdog dog(120);
  for (int threads : {2, 4}) {
    INFO("threads=" << threads);
    thread_pool_executor pool(threads);
    std::atomic<int> bad{0}, early{0};
    std::vector<std::thread> callers;
    for (int c = 0; c < 3; ++c)
      callers.emplace_back([&, c] { bad.fetch_add(run_changing_calls(pool, 1500, 5 * c, early)); });
    for (auto& t : callers) t.join();
    CHECK(bad.load() == 0);
    CHECK(early.load() == 0);
  }
}

TEST_CASE("thread_pool_executor: task ranges cover huge n without overflow") {
  // n·(c + 1) overflowed index_t for n near its maximum (UBSan); the ranges
  // must still tile [0, n) exactly.
  thread_pool_executor pool(3);
  const index_t n = std::numeric_limits<index_t>::max() - 5;
  std::mutex m;
  std::vector<std::pair<index_t, index_t>> ranges;
  pool.parallel_for(n, [&](index_t b, index_t e) {
    std::lock_guard lock(m);
    ranges.emplace_back(b, e);
  });
  std::sort(ranges.begin(), ranges.end());
  REQUIRE(!ranges.empty());
  CHECK(ranges.front().first == 0);
  CHECK(ranges.back().second == n);
  bool tiled = true;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    tiled &= ranges[i].first < ranges[i].second;
    if (i > 0) tiled &= ranges[i].first == ranges[i - 1].second;
  }
  CHECK(tiled);
}

// A worker that cannot be started used to leave the started ones joinable,
// so destroying workers_ called std::terminate. In a child process with a
// small address-space limit, thread stacks (8 MiB each) run out after a few:
// the pool must throw resource_error and leave nothing running.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LQER_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LQER_TEST_SANITIZED 1
#endif

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

TEST_CASE("thread_pool_executor: a thread that cannot start gives resource_error, not std::terminate") {
#if defined(LQER_TEST_SANITIZED)
  MESSAGE("skipped under a sanitizer: its shadow memory needs more address space than the limit leaves");
#else
  std::fflush(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Room for what the process already maps plus a few thread stacks.
    rlimit lim{};
    getrlimit(RLIMIT_AS, &lim);
    long pages = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    const rlim_t used = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE));
    lim.rlim_cur = used + (rlim_t{48} << 20);
    if (setrlimit(RLIMIT_AS, &lim) != 0) std::_Exit(4);
    try {
      thread_pool_executor pool(256);  // 255 stacks of 8 MiB cannot fit in 48 MiB
      std::_Exit(5);                   // every thread started: the limit did not bite
    } catch (const resource_error& e) {
      const std::string what = e.what();
      std::_Exit(what.find("cannot start worker thread") != std::string::npos ? 0 : 6);
    } catch (...) {
      std::_Exit(7);
    }
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("child status " << status << " (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << ")");
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
#endif
}
