// engine — the thread pool both example engines (use_lite, llama) run on,
// which is also an lqer executor.
//
// An inference engine owns its threads; lqer never creates any. This pool
// satisfies lqer::executor (exec/executor.hpp), so the engine hands it to
// lqer's kernels as it is: the same threads run the attention, the layer norms
// and the quantized GEMMs.
//
// parallel_for(n, fn) calls fn(i, i + 1) once for every task i in [0, n), on
// the calling thread and the workers, which take tasks from one atomic counter
// (cheap, and it balances uneven tasks — sentences of different lengths,
// causal attention rows of different lengths — by itself). Which thread runs
// which task is not fixed, so callers that need results independent of the
// thread count (every caller here) make a task's work depend on its index
// only: fixed-size chunks, never "one per thread".
// A parallel_for issued from inside a task runs inline (no deadlock); calls
// from different threads are serialized.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <lqer/config.hpp>
#include <lqer/exec/executor.hpp>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace engine {

class thread_pool {
 public:
  /// A pool of `threads` threads in all: the caller and threads − 1 workers.
  explicit thread_pool(int threads = 1) {
    const int workers = std::max(threads, 1) - 1;
    workers_.reserve(static_cast<std::size_t>(workers));
    for (int t = 0; t < workers; ++t) workers_.emplace_back([this] { worker_loop(); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  /// Threads that run a parallel_for (the caller included).
  int concurrency() const noexcept { return static_cast<int>(workers_.size()) + 1; }

  /// Runs fn(i, i + 1) for every i in [0, n); blocks until all have returned.
  /// The first exception thrown is rethrown here (later tasks are skipped).
  template <class F>
  void parallel_for(lqer::index_t n, F&& fn) {
    if (n <= 0) return;
    if (workers_.empty() || n == 1 || inside_task()) {
      for (lqer::index_t i = 0; i < n; ++i) fn(i, i + 1);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    std::lock_guard submit(submit_);  // one parallel_for at a time
    std::unique_lock lock(mutex_);
    job_ = {[](void* ctx, lqer::index_t i) { (*static_cast<Fn*>(ctx))(i, i + 1); },
            const_cast<void*>(static_cast<const void*>(std::addressof(fn)))};
    count_ = n;
    next_.store(0);
    error_ = nullptr;
    busy_ = static_cast<int>(workers_.size());
    ++generation_;
    lock.unlock();
    wake_.notify_all();
    run_tasks();
    lock.lock();
    done_.wait(lock, [this] { return busy_ == 0; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  struct job {
    void (*call)(void*, lqer::index_t) = nullptr;
    void* ctx = nullptr;
  };

  static bool& inside_task() noexcept {
    thread_local bool inside = false;
    return inside;
  }

  void run_tasks() {
    bool& inside = inside_task();
    inside = true;
    for (;;) {
      const lqer::index_t i = next_.fetch_add(1);
      if (i >= count_) break;
      try {
        job_.call(job_.ctx, i);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(count_);  // skip what is left
      }
    }
    inside = false;
  }

  void worker_loop() {
    std::size_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      run_tasks();
      {
        std::lock_guard lock(mutex_);
        --busy_;
      }
      done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex submit_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  job job_;                  // written under mutex_ before generation_ changes
  lqer::index_t count_ = 0;  // likewise
  std::atomic<lqer::index_t> next_{0};
  std::exception_ptr error_;
  int busy_ = 0;
  std::size_t generation_ = 0;
  bool stopping_ = false;
};

static_assert(lqer::executor<thread_pool>, "the engine's pool must be usable as an lqer executor");

}  // namespace engine
