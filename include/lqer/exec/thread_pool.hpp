// lqer — thread_pool_executor: a small std::thread pool with persistent
// workers, for callers that do not bring their own (see exec/executor.hpp for
// the parallel_for contract).
//
// Scheduling: n tasks are cut into C = min(n, 4·T) contiguous chunks (T = the
// pool's concurrency) which the calling thread and the workers claim one at a
// time. Kernel results never depend on the cut or on who runs a chunk. Why
// claimed chunks rather than one fixed chunk per thread: on a shared or
// oversubscribed machine a worker may not be scheduled for milliseconds, and
// with fixed chunks the whole call would wait for it; here the others take its
// share, and the caller waits only for chunks, never for a worker to wake up.
//
// The claim counter carries the call's generation in its high 32 bits, so a
// worker that wakes late (even several calls later) can never claim a chunk of
// a call other than the one it read the job of: a compare-and-swap on
// (generation, next chunk) both validates and claims. The job description is
// read only after a successful claim, when the caller is certainly still
// waiting for that chunk.
//
// Waking: a call publishes a new generation. Idle workers spin on it for a
// short while (a GEMV on a 4096×4096 layer takes ~0.2 ms, a futex round trip
// several µs) and then block in std::atomic::wait, so an idle pool costs no
// CPU. The caller waits for the last chunk the same way.
//
// Thread-safety: parallel_for may be called from any thread; calls from
// different threads are serialized. A parallel_for issued from inside a task
// of the same pool runs inline on the calling thread (no deadlock, no
// oversubscription).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/exec/executor.hpp"

namespace lqer {

class thread_pool_executor {
 public:
  /// A pool that runs tasks on `threads` threads in total: the caller of
  /// parallel_for plus threads − 1 workers. 0 means std::thread::hardware_concurrency().
  explicit thread_pool_executor(int threads = 0) {
    if (threads < 0) throw value_error("thread_pool_executor: negative thread count " + std::to_string(threads));
    if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    threads_ = threads;
    workers_.reserve(static_cast<std::size_t>(threads - 1));
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  thread_pool_executor(const thread_pool_executor&) = delete;
  thread_pool_executor& operator=(const thread_pool_executor&) = delete;

  ~thread_pool_executor() {
    stop_.store(true, std::memory_order_relaxed);
    std::lock_guard<std::mutex> submit(submit_);
    publish(0);  // a new generation with no chunk: wakes every worker, which then sees stop_
    for (auto& t : workers_) t.join();
  }

  /// Number of threads that run tasks (the caller included).
  int concurrency() const noexcept { return threads_; }

  /// See exec/executor.hpp.
  template <class F>
  void parallel_for(index_t n_tasks, F&& fn) {
    if (n_tasks <= 0) return;
    if (threads_ == 1 || n_tasks == 1 || tls_inside_task()) {  // nothing to share, or nested: run inline
      fn(index_t{0}, n_tasks);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    std::lock_guard<std::mutex> submit(submit_);
    const int chunks = static_cast<int>(std::min<index_t>(n_tasks, index_t{kChunksPerThread} * threads_));
    job_.call = [](void* ctx, index_t b, index_t e) { (*static_cast<Fn*>(ctx))(b, e); };
    job_.ctx = const_cast<void*>(static_cast<const void*>(std::addressof(fn)));
    job_.n = n_tasks;
    job_.chunks = chunks;
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    const std::uint32_t gen = publish(chunks);  // release: publishes job_

    work_on(gen);  // the caller claims chunks too

    // Wait for the chunks others claimed: spin briefly, then block.
    for (int spin = 0; spin < kSpins && done_.load(std::memory_order_acquire) != chunks; ++spin) cpu_relax();
    for (int d; (d = done_.load(std::memory_order_acquire)) != chunks;) done_.wait(d, std::memory_order_acquire);
    if (error_) {
      std::exception_ptr e = std::exchange(error_, nullptr);
      std::rethrow_exception(e);
    }
  }

 private:
  static constexpr int kChunksPerThread = 4;
  // ~2000 pause instructions: tens of µs, longer than a futex wake-up and
  // shorter than any layer worth running on several threads.
  static constexpr int kSpins = 2048;

  struct job {
    void (*call)(void*, index_t, index_t) = nullptr;
    void* ctx = nullptr;
    index_t n = 0;
    int chunks = 0;
  };

  static bool& tls_inside_task() noexcept {
    thread_local bool inside = false;
    return inside;
  }

  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
  }

  static std::uint32_t generation_of(std::uint64_t s) noexcept { return static_cast<std::uint32_t>(s >> 32); }

  /// Starts a new generation whose chunks [0, chunks) are unclaimed; wakes the workers.
  std::uint32_t publish(int chunks) noexcept {
    const std::uint32_t gen = generation_of(claim_.load(std::memory_order_relaxed)) + 1;
    chunks_of_gen_.store(chunks, std::memory_order_relaxed);
    claim_.store(static_cast<std::uint64_t>(gen) << 32, std::memory_order_release);
    claim_.notify_all();
    return gen;
  }

  /// Claims and runs chunks of generation `gen` until none is left.
  void work_on(std::uint32_t gen) noexcept {
    for (;;) {
      std::uint64_t s = claim_.load(std::memory_order_acquire);
      if (generation_of(s) != gen) return;
      const int c = static_cast<int>(s & 0xffffffffu);
      if (c >= chunks_of_gen_.load(std::memory_order_relaxed)) return;
      if (!claim_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_relaxed)) continue;
      // Claimed chunk c of generation gen: the caller waits for it, so job_ is
      // that call's job and stays valid until done_ counts this chunk.
      const int chunks = job_.chunks;  // read now: once the last chunk is counted, job_ may change
      const index_t b = job_.n * c / chunks, e = job_.n * (c + 1) / chunks;
      bool& inside = tls_inside_task();
      inside = true;
      try {
        job_.call(job_.ctx, b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      inside = false;
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) done_.notify_one();
    }
  }

  void worker_loop() {
    std::uint32_t seen = 0;
    for (;;) {
      std::uint64_t s = claim_.load(std::memory_order_acquire);
      for (int spin = 0; generation_of(s) == seen && spin < kSpins; ++spin) {
        cpu_relax();
        s = claim_.load(std::memory_order_acquire);
      }
      while (generation_of(s) == seen) {
        claim_.wait(s, std::memory_order_acquire);
        s = claim_.load(std::memory_order_acquire);
      }
      seen = generation_of(s);
      if (stop_.load(std::memory_order_relaxed)) return;
      work_on(seen);
    }
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex submit_;                    // one parallel_for at a time
  job job_;                              // written under submit_ before publish(); read after a successful claim
  std::atomic<std::uint64_t> claim_{0};  // (generation << 32) | next unclaimed chunk
  std::atomic<int> chunks_of_gen_{0};
  std::atomic<int> done_{0};
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

static_assert(executor<thread_pool_executor>);

}  // namespace lqer
