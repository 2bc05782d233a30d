// engine — the thread pool both example engines (use_lite, llama) run on,
// which is also an lqer executor.
//
// An inference engine owns its threads; lqer never creates any. This pool
// satisfies lqer::executor (exec/executor.hpp), so the engine hands it to
// lqer's kernels as it is: the same threads run the attention, the layer norms
// and the quantized GEMMs.
//
// parallel_for(n, fn) calls fn(i, i + 1) once for every task i in [0, n)
// (n ≤ kMaxChunks; a larger n is cut into kMaxChunks contiguous ranges), on
// the calling thread and the workers — or fn(0, n) once when it runs inline
// (one thread, one task, or a call from inside a task: then lqer's GEMV, for
// one, sees its whole range of tiles and prefetches each next tile while it
// computes the current one, which single-tile calls cannot) — and the workers
// claim tasks one at a time (cheap,
// and it balances uneven tasks — sentences of different lengths, causal
// attention rows of different lengths, layers to factorize — by itself).
// Which thread runs which task is not fixed, so callers that need results
// independent of the thread count (every caller here) make a task's work
// depend on its index only: fixed-size chunks, never "one per thread".
// A parallel_for issued from inside a task runs inline (no deadlock); calls
// from different threads are serialized.
//
// The protocol is lqer::thread_pool_executor's (exec/thread_pool.hpp, whose
// comment has the full argument; tests/exec/thread_pool.pml model-checks it),
// with one claimable chunk per task instead of 4 per thread: an engine's
// tasks are few and uneven (9 attention heads, 9–24 GEMV tiles, 210 layers
// to factorize), so finer claims balance better, and a claim is one CAS.
// In short: one 64-bit word (generation : 40 | chunks : 12 | next : 12)
// describes the current call, and a chunk is claimed by a CAS on the whole
// word, so a thread that read the word long ago can never pair an old
// generation with a new call's count or job; job_ is written before the
// release store that publishes the generation, and every later change of the
// word within the call is a read-modify-write continuing that release
// sequence, so a successful claimer sees the job; each finished chunk's
// acq_rel increment of done_ is what the caller's acquire load waits for.
//
// Waking. The old pool made every call wait until each worker had woken
// (futex) and checked in, even when the caller had run every task itself:
// a decode step is ~215 calls of a few µs each, so that wake-up latency was
// on the critical path ~215 times per token. Here the caller waits only for
// chunks claimed by others. Idle workers spin on the word for a short while
// (kSpins pauses, tens of µs — longer than the serial gap between two calls
// of a forward pass, so a running model never sleeps its workers) and then
// block in std::atomic::wait, so an idle pool costs no CPU.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
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
  /// Most claimable chunks per call: the claim word's 12-bit fields.
  static constexpr lqer::index_t kMaxChunks = 4095;

  /// A pool of `threads` threads in all: the caller and threads − 1 workers.
  explicit thread_pool(int threads = 1) {
    const int workers = std::max(threads, 1) - 1;
    workers_.reserve(static_cast<std::size_t>(workers));
    try {
      for (int t = 0; t < workers; ++t) workers_.emplace_back([this] { worker_loop(); });
    } catch (...) {
      stop_workers();  // joinable std::threads must not be destroyed
      throw;
    }
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() { stop_workers(); }

  /// Threads that run a parallel_for (the caller included).
  int concurrency() const noexcept { return static_cast<int>(workers_.size()) + 1; }

  /// Runs fn(i, i + 1) for every i in [0, n) (ranges for n > kMaxChunks);
  /// blocks until all have returned. The first exception thrown is rethrown
  /// here (the other tasks still run).
  template <class F>
  void parallel_for(lqer::index_t n, F&& fn) {
    if (n <= 0) return;
    if (workers_.empty() || n == 1 || inside_task()) {
      fn(lqer::index_t{0}, n);  // inline: the whole range in one call, as lqer::serial_executor
      return;
    }
    using Fn = std::remove_reference_t<F>;
    std::lock_guard submit(submit_);  // one parallel_for at a time
    const auto chunks = static_cast<std::uint32_t>(std::min(n, kMaxChunks));
    job_ = {[](void* ctx, lqer::index_t b, lqer::index_t e) { (*static_cast<Fn*>(ctx))(b, e); },
            const_cast<void*>(static_cast<const void*>(std::addressof(fn))), n};
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);  // ordered before publish's release store
    const std::uint64_t gen = publish(chunks);  // release: publishes job_
    work_on(gen);                               // the caller claims chunks too
    // Wait for the chunks the workers claimed: spin, then block.
    const int all = static_cast<int>(chunks);
    for (int spin = 0; spin < kSpins && done_.load(std::memory_order_acquire) != all; ++spin) cpu_relax();
    for (int d; (d = done_.load(std::memory_order_acquire)) != all;) done_.wait(d, std::memory_order_acquire);
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  // ~2000 pause instructions: tens of µs (a pause is ~40–140 cycles on
  // current x86), longer than a futex wake-up and than the serial work between
  // two calls of a forward pass.
  static constexpr int kSpins = 2048;

  // The claim word's fields (see the file comment).
  static constexpr int kCountBits = 12;
  static_assert(kMaxChunks == (lqer::index_t{1} << kCountBits) - 1);
  static constexpr std::uint64_t kCountMask = static_cast<std::uint64_t>(kMaxChunks);
  static std::uint64_t generation_of(std::uint64_t s) noexcept { return s >> (2 * kCountBits); }
  static std::uint32_t chunks_of(std::uint64_t s) noexcept {
    return static_cast<std::uint32_t>((s >> kCountBits) & kCountMask);
  }
  static std::uint32_t next_of(std::uint64_t s) noexcept { return static_cast<std::uint32_t>(s & kCountMask); }

  struct job {
    void (*call)(void*, lqer::index_t, lqer::index_t) = nullptr;
    void* ctx = nullptr;
    lqer::index_t n = 0;
  };

  static bool& inside_task() noexcept {
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

  /// Starts a new generation whose `chunks` chunks are all unclaimed (0: a
  /// call with nothing to claim, which stop_workers uses to wake the workers)
  /// and wakes the workers. Returns the generation. Called under submit_.
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
      // Claimed chunk c of call gen, whose chunk count is `chunks` (same
      // word): that call's caller waits for this chunk, so job_ is its job.
      const lqer::index_t b = lqer::detail::split_begin(job_.n, chunks, c),
                          e = lqer::detail::split_begin(job_.n, chunks, c + 1);
      bool& inside = inside_task();
      inside = true;
      try {
        job_.call(job_.ctx, b, e);
      } catch (...) {
        std::lock_guard lock(error_mutex_);
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
      std::lock_guard submit(submit_);
      publish(0);  // a generation with no chunk: wakes every worker, which then sees stop_
    }
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex submit_;                    // one parallel_for at a time
  job job_;                              // written under submit_ before publish(); read after a successful claim
  std::atomic<std::uint64_t> claim_{0};  // (generation : 40 | chunks : 12 | next unclaimed chunk : 12)
  std::atomic<int> done_{0};             // chunks of the current call that have returned
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

static_assert(lqer::executor<thread_pool>, "the engine's pool must be usable as an lqer executor");

}  // namespace engine
