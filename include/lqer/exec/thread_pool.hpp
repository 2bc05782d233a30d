// lqer — thread_pool_executor: a small std::thread pool with persistent
// workers, for callers that do not bring their own (see exec/executor.hpp for
// the parallel_for contract).
//
// Scheduling: n tasks are cut into C = min(n, 4·T, 4095) contiguous chunks (T = the
// pool's concurrency) which the calling thread and the workers claim one at a
// time. Kernel results never depend on the cut or on who runs a chunk. Why
// claimed chunks rather than one fixed chunk per thread: on a shared or
// oversubscribed machine a worker may not be scheduled for milliseconds, and
// with fixed chunks the whole call would wait for it; here the others take its
// share, and the caller waits only for chunks, never for a worker to wake up.
//
// The claim protocol. One 64-bit word, claim_, describes the current call
// completely: (generation : 40 | chunks : 12 | next unclaimed chunk : 12).
// A thread claims chunk c by a compare-and-swap of (g, C, c) → (g, C, c + 1).
// Why this is safe against a thread that read the word long ago (a worker
// still looping in the previous call, or one that slept through several):
//   * A successful CAS proves that at that instant the word was (g, C, c):
//     g is the current call (generations only grow, and 2^40 calls at ≥ 1 µs
//     each take 12 days, so a stale g cannot come back), C is *that* call's
//     chunk count (it is in the same word, published by the same store — the
//     bug this layout removes was a count read from a separate variable, which
//     let a stale worker pair an old generation with a new, larger count), and
//     chunk c was not claimed before (within a call `next` only grows, one
//     step per successful CAS). So every chunk of a call runs exactly once.
//   * The caller of g returns only when done_ reaches C, and done_ counts only
//     chunks claimed in g (each once): no overshoot, no early return. While
//     any chunk of g is claimed but not counted, g's caller is still inside
//     parallel_for, so job_ still holds g's job and the next call cannot start
//     (it needs submit_, which g's caller holds).
//   * Visibility: job_ is written before the release store that publishes
//     (g, C, 0); every later change of claim_ within g is a read-modify-write,
//     so it continues that store's release sequence and a claimer's acquiring
//     CAS sees the job. Each chunk's fetch_add on done_ (acq_rel) is seen by the
//     caller's acquire load of C, so all of a call's reads of job_ and writes of
//     the tasks happen before parallel_for returns and before the next call
//     rewrites job_.
// Chunk c covers [split_begin(n, C, c), split_begin(n, C, c + 1)) (exec/executor.hpp):
// no product of n with anything, so no overflow for any n.
//
// Waking: a call publishes a new generation. Idle workers spin on it for a
// short while (a GEMV on a 4096×4096 layer takes ~0.2 ms, a futex round trip
// several µs) and then block in std::atomic::wait, so an idle pool costs no
// CPU. The caller waits for the last chunk the same way.
//
// Thread-safety: parallel_for may be called from any thread; calls from
// different threads are serialized. A parallel_for issued from inside a task
// of the same pool runs inline on the calling thread (no deadlock, no
// oversubscription). The pool must not be destroyed while a call is running.
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
  /// Throws value_error for a negative count and resource_error when a worker
  /// thread cannot be started (the workers already started are stopped and
  /// joined first, so nothing is left running).
  explicit thread_pool_executor(int threads = 0) {
    if (threads < 0) throw value_error("thread_pool_executor: negative thread count " + std::to_string(threads));
    if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    threads_ = threads;
    try {
      workers_.reserve(static_cast<std::size_t>(threads - 1));
      for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
    } catch (const std::exception& e) {
      // Joinable std::threads must not be destroyed (std::terminate): stop
      // the ones that run, then report.
      const std::size_t started = workers_.size();
      stop_workers();
      throw resource_error("thread_pool_executor: cannot start worker thread " + std::to_string(started + 1) + " of " +
                           std::to_string(threads - 1) + ": " + e.what());
    }
  }

  thread_pool_executor(const thread_pool_executor&) = delete;
  thread_pool_executor& operator=(const thread_pool_executor&) = delete;

  ~thread_pool_executor() { stop_workers(); }

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
    const auto chunks = static_cast<std::uint32_t>(
        std::min<index_t>({n_tasks, index_t{kChunksPerThread} * threads_, index_t{kMaxChunks}}));
    job_.call = [](void* ctx, index_t b, index_t e) { (*static_cast<Fn*>(ctx))(b, e); };
    job_.ctx = const_cast<void*>(static_cast<const void*>(std::addressof(fn)));
    job_.n = n_tasks;
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    const std::uint64_t gen = publish(chunks);  // release: publishes job_

    work_on(gen);  // the caller claims chunks too

    // Wait for the chunks others claimed: spin briefly, then block.
    const int all = static_cast<int>(chunks);
    for (int spin = 0; spin < kSpins && done_.load(std::memory_order_acquire) != all; ++spin) cpu_relax();
    for (int d; (d = done_.load(std::memory_order_acquire)) != all;) done_.wait(d, std::memory_order_acquire);
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

  // The claim word's fields (see the file comment).
  static constexpr int kCountBits = 12;
  static constexpr std::uint32_t kMaxChunks = (1u << kCountBits) - 1;
  static constexpr std::uint64_t kCountMask = kMaxChunks;
  static std::uint64_t generation_of(std::uint64_t s) noexcept { return s >> (2 * kCountBits); }
  static std::uint32_t chunks_of(std::uint64_t s) noexcept {
    return static_cast<std::uint32_t>((s >> kCountBits) & kCountMask);
  }
  static std::uint32_t next_of(std::uint64_t s) noexcept { return static_cast<std::uint32_t>(s & kCountMask); }

  struct job {
    void (*call)(void*, index_t, index_t) = nullptr;
    void* ctx = nullptr;
    index_t n = 0;
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

  /// Starts a new generation whose `chunks` chunks are all unclaimed (chunks
  /// may be 0: a call with nothing to claim, used to wake the workers); wakes
  /// the workers. Returns the generation.
  std::uint64_t publish(std::uint32_t chunks) noexcept {
    const std::uint64_t gen = generation_of(claim_.load(std::memory_order_relaxed)) + 1;
    claim_.store(gen << (2 * kCountBits) | std::uint64_t{chunks} << kCountBits, std::memory_order_release);
    claim_.notify_all();
    return gen;
  }

  /// Claims and runs chunks of generation `gen` until none is left.
  void work_on(std::uint64_t gen) noexcept {
    for (;;) {
      std::uint64_t s = claim_.load(std::memory_order_acquire);
      if (generation_of(s) != gen) return;
      const std::uint32_t c = next_of(s), chunks = chunks_of(s);
      if (c >= chunks) return;
      if (!claim_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_relaxed)) continue;
      // Claimed chunk c of call gen, whose chunk count is `chunks` (same word):
      // that call's caller waits for this chunk, so job_ is its job.
      const index_t b = detail::split_begin(job_.n, chunks, c), e = detail::split_begin(job_.n, chunks, c + 1);
      bool& inside = tls_inside_task();
      inside = true;
      try {
        job_.call(job_.ctx, b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      inside = false;
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<int>(chunks)) done_.notify_one();
    }
  }

  void worker_loop() {
    std::uint64_t seen = 0;
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

  /// Tells every started worker to return and joins it.
  void stop_workers() noexcept {
    stop_.store(true, std::memory_order_relaxed);  // ordered before the release store in publish()
    {
      std::lock_guard<std::mutex> submit(submit_);
      publish(0);  // a new generation with no chunk: wakes every worker, which then sees stop_
    }
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex submit_;                    // one parallel_for at a time
  job job_;                              // written under submit_ before publish(); read after a successful claim
  std::atomic<std::uint64_t> claim_{0};  // (generation : 40 | chunks : 12 | next unclaimed chunk : 12)
  std::atomic<int> done_{0};
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

static_assert(executor<thread_pool_executor>);

}  // namespace lqer
