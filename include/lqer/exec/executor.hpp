// lqer — executors: how a kernel hands its independent tasks to the caller's
// threads. Threading belongs to the caller (an inference engine has its own
// pool); lqer's kernels only ever ask for one thing:
//
//     exec.parallel_for(n_tasks, fn)   with fn(begin, end) callable as
//                                      `void(index_t begin, index_t end)`
//
// Contract of parallel_for (what every executor must guarantee and what the
// kernels rely on):
//   * fn is called on disjoint ranges [begin, end) that together cover
//     [0, n_tasks) exactly once; possibly concurrently from several threads;
//     never with an empty range. n_tasks ≤ 0 means no call at all.
//   * parallel_for returns only after every call has returned, and everything
//     those calls wrote is visible to the caller afterwards (happens-before).
//   * if a call throws, the remaining calls still run or are skipped, and one
//     of the exceptions is rethrown to the caller of parallel_for.
// Optionally, `exec.concurrency()` (an int): how many threads may run tasks
// at once. Kernels use it only to cut work into equal shares per thread
// (a GEMV of a few tiles), never for correctness; without it they assume
// nothing and cut into many small tasks.
// Kernels make every task's result independent of which thread runs it and of
// how the range is cut, so results are bit-identical for any executor.
//
// Ready executors: serial_executor (here, the default), thread_pool_executor
// (exec/thread_pool.hpp, std::thread, persistent workers) and openmp_executor
// (exec/openmp.hpp, needs -fopenmp).
#pragma once

#include <concepts>
#include <type_traits>

#include "lqer/config.hpp"

namespace lqer {

namespace detail {
/// The shape of the callable an executor receives (for the concept only).
struct range_task_archetype {
  void operator()(index_t, index_t) const {}
};
/// Where part i of n tasks cut into `parts` contiguous, near-equal parts
/// begins (part i is [split_begin(n, parts, i), split_begin(n, parts, i + 1))):
/// i·q + min(i, r) with q = n / parts, r = n % parts. Never forms n·i, so it
/// cannot overflow for any n (n·(i + 1) / parts did, near index_t's maximum).
constexpr index_t split_begin(index_t n, index_t parts, index_t i) noexcept {
  const index_t q = n / parts, r = n % parts;
  return i * q + (i < r ? i : r);
}
}  // namespace detail

/// Anything with `parallel_for(n_tasks, fn)` honouring the contract in the file comment.
template <class E>
concept executor = requires(E& e, index_t n, const detail::range_task_archetype& fn) {
  {e.parallel_for(n, fn)};
};

/// Runs everything on the calling thread: fn(0, n_tasks) once.
struct serial_executor {
  template <class F>
  void parallel_for(index_t n_tasks, F&& fn) const {
    if (n_tasks > 0) fn(index_t{0}, n_tasks);
  }
  /// Number of threads that may run tasks at once.
  static constexpr int concurrency() noexcept { return 1; }
};

static_assert(executor<serial_executor>);

/// e.concurrency() when E has one (see the file comment), else 0: unknown.
template <class E>
int concurrency_of(const E& e) noexcept {
  if constexpr (requires {
                  { e.concurrency() } -> std::convertible_to<int>;
                })
    return static_cast<int>(e.concurrency());
  else
    return 0;
}

/// Any executor behind one type: a non-owning reference that forwards
/// parallel_for through two indirect calls (one per parallel_for, one per
/// range it hands out). linear() runs its driver on an executor_ref, so the
/// kernels are compiled once per layer type instead of once per layer type
/// and executor type, and lqer::kernels can hold them compiled (issue #18).
/// The referenced executor must outlive the executor_ref.
class executor_ref {
 public:
  /// Implicit, as a reference converts: any executor passes where an executor_ref is taken.
  template <class E>
  requires(executor<E> && !std::same_as<std::remove_cv_t<E>, executor_ref>) executor_ref(E& exec)
  noexcept
      : exec_(const_cast<void*>(static_cast<const void*>(&exec))),
        run_(&run_on<E>),
        concurrency_(concurrency_of(exec)) {}

  /// The referenced executor's concurrency(), or 0 when it has none (unknown).
  int concurrency() const noexcept { return concurrency_; }

  template <class F>
  void parallel_for(index_t n_tasks, F&& fn) const {
    using Fn = std::remove_reference_t<F>;
    run_(
        exec_, n_tasks, [](void* f, index_t b, index_t e) { (*static_cast<Fn*>(f))(b, e); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using range_fn = void (*)(void*, index_t, index_t);
  template <class E>
  static void run_on(void* exec, index_t n_tasks, range_fn fn, void* ctx) {
    static_cast<E*>(exec)->parallel_for(n_tasks, [fn, ctx](index_t b, index_t e) { fn(ctx, b, e); });
  }

  void* exec_;
  void (*run_)(void*, index_t, range_fn, void*);
  int concurrency_;
};

static_assert(executor<executor_ref>);

}  // namespace lqer
