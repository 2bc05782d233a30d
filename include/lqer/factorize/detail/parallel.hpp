// lqer — the little threading the offline factorization needs: OpenMP when the
// program is built with it, serial otherwise. Eigen parallelizes its own GEMMs
// the same way (it reads the same OpenMP setting), so one `OMP_NUM_THREADS` /
// `omp_set_num_threads` governs the whole factorization.
//
// The big products are cut into independent bands of the big operand, one
// single-threaded kernel call per band (detail/thin_gemm.hpp): on 2 cores
// Eigen's own parallel GEMM, which packs the big operand in shared panels,
// measured 2–6× slower than that on these tall, skinny products.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>

#include "lqer/config.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace lqer::detail {

/// Calls body(begin, end) for consecutive chunks [begin, end) of [0, n) of at most
/// `chunk` elements, in parallel when OpenMP is enabled. Chunks are handed out
/// dynamically (the machines this runs on are shared and noisy; a static split
/// waits for the slowest core). body must only write what its chunk owns.
/// An exception cannot leave an OpenMP region (it would terminate the
/// program), so the first one thrown by any chunk is kept, the remaining chunks
/// are skipped, and it is rethrown here.
template <class Body>
void parallel_chunks(index_t n, index_t chunk, Body&& body) {
  if (n <= 0) return;
  if (chunk < 1) chunk = 1;
  const index_t count = (n + chunk - 1) / chunk;
#if defined(_OPENMP)
  std::exception_ptr first;
  std::atomic<bool> failed{false};
#pragma omp parallel for schedule(dynamic, 1)
  for (index_t c = 0; c < count; ++c) {
    if (failed.load(std::memory_order_relaxed)) continue;
    try {
      const index_t b = c * chunk;
      body(b, b + chunk < n ? b + chunk : n);
    } catch (...) {
#pragma omp critical(lqer_parallel_chunks)
      if (!first) first = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  }
  if (first) std::rethrow_exception(first);
#else
  for (index_t c = 0; c < count; ++c) {
    const index_t b = c * chunk;
    body(b, b + chunk < n ? b + chunk : n);
  }
#endif
}

/// Number of chunks parallel_chunks(n, chunk, …) makes.
inline index_t chunk_count(index_t n, index_t chunk) noexcept { return n <= 0 ? 0 : (n + chunk - 1) / chunk; }

/// Rows (or columns) of the big operand per single-threaded band. Fixed,
/// not derived from the thread count, so that every output element is computed
/// by the same kernel call whatever the number of threads: results do not change
/// with OMP_NUM_THREADS. 256 rows of a 4096-wide float matrix are 4 MB, large
/// enough for a full-speed kernel call and small enough (16–43 bands at LLaMA sizes)
/// for dynamic balancing.
inline constexpr index_t kBandRows = 256;

/// parallel_chunks as an lqer::executor (exec/executor.hpp): for the library's
/// own executor-taking code (e.g. quantized_matrix::quantize) inside the
/// offline factorization, so that one OpenMP setting governs all of it.
struct parallel_chunks_executor {
  index_t chunk = 64;
  template <class F>
  void parallel_for(index_t n_tasks, F&& fn) const {
    parallel_chunks(n_tasks, chunk, fn);
  }
};

}  // namespace lqer::detail
