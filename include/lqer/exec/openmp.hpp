// lqer — openmp_executor: runs parallel_for on an OpenMP parallel region
// (see exec/executor.hpp for the contract). Compile with -fopenmp (GCC, or
// clang with libomp); without it this header stops with an #error rather than
// silently running serially. lqer.hpp includes it only when _OPENMP is defined.
//
// Static schedule: thread t of T runs the contiguous chunk
// [split_begin(n, T, t), split_begin(n, T, t + 1)) (exec/executor.hpp).
// Exceptions cannot cross the end of an OpenMP region, so each thread
// catches its own and the first one is rethrown
// after the region.
#pragma once

#if !defined(_OPENMP)
#error "lqer/exec/openmp.hpp needs OpenMP: compile with -fopenmp (or use thread_pool_executor)"
#endif

#include <omp.h>

#include <algorithm>
#include <exception>
#include <mutex>

#include "lqer/config.hpp"
#include "lqer/exec/executor.hpp"

namespace lqer {

struct openmp_executor {
  /// Threads per region; 0 means OpenMP's default (OMP_NUM_THREADS / omp_get_max_threads()).
  int threads = 0;

  int concurrency() const noexcept { return threads > 0 ? threads : omp_get_max_threads(); }

  template <class F>
  void parallel_for(index_t n_tasks, F&& fn) const {
    if (n_tasks <= 0) return;
    const int t_max = static_cast<int>(std::min<index_t>(n_tasks, concurrency()));
    if (t_max <= 1 || omp_in_parallel()) {  // nested: run inline rather than oversubscribe
      fn(index_t{0}, n_tasks);
      return;
    }
    std::exception_ptr error;
    std::mutex error_mutex;
#pragma omp parallel num_threads(t_max)
    {
      const index_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const index_t b = detail::split_begin(n_tasks, nt, t), e = detail::split_begin(n_tasks, nt, t + 1);
      if (b < e) {
        try {
          fn(b, e);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (!error) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
  }
};

static_assert(executor<openmp_executor>);

}  // namespace lqer
