// lqer — the factorization's large products: a big row-major float matrix E
// (the quantization error, 4096 × 11008 at LLaMA sizes) times thin matrices of
// k + p ≈ 42 columns, and the report's ‖E − (A B)ᵀ‖ sums, as register-tiled
// xsimd kernels.
//
// Why not Eigen's GEMM: it packs the big operand into panels on every call —
// a full extra read and write of E per product, 8 products per randomized SVD
// — and its micro-kernel is shaped for square-ish products. Here the thin
// operand is the one worth laying out: it is copied once per product into a
// row-major panel padded to whole SIMD vectors (thin_panel), and E is read in
// place, each element broadcast against up to 3 vectors of the panel:
//
//   rows_times_panel         Y = E_band · P       E rows [i], reduction along E's rows
//   rows_transposed_times_panel  Y = E_bandᵀ · P  E columns [c], reduction down E's columns
//
// Both are the same micro-kernel, a tile of kTileRows output rows × NV vectors
// (8 × 3 = 24 accumulators, 3 panel loads and 8 broadcasts per step: FMA-bound
// on 32 vector registers), with the reduction cut into chunks that keep the
// panel's part in L2 (kReductionChunk rows × 48 floats = 192 KiB) and, for the
// transposed product, E's part in L1/L2 (kTransposedRows rows × the band).
//
// Rounding: each output is a float FMA chain over the reduction in index
// order: |error| ≤ γ_n(u_f) · Σ|e||p| (n = reduction length), like any float
// dot product. The order depends only on the band, not on the number of
// threads, so results are bit-identical for every thread count.
//
// The ISA is the one the program is compiled for (xsimd's default
// architecture), as for Eigen itself: this is offline code, and the factorize
// benchmark and the `lqer` CLI are built for the machine they run on.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>
#include <xsimd/xsimd.hpp>

#include "lqer/config.hpp"

namespace lqer::detail::thin {

using fbatch = xsimd::batch<float>;
using dbatch = xsimd::batch<double>;
inline constexpr index_t kLanes = static_cast<index_t>(fbatch::size);
inline constexpr int kMaxVectors = 3;             // panel vectors per tile (3 × 16 = 48 columns on AVX-512)
inline constexpr int kTileRows = 8;               // output rows per tile: 8 × 3 accumulators + 3 panel vectors
inline constexpr index_t kReductionChunk = 1024;  // panel rows per pass over the tile rows (L2)
inline constexpr index_t kTransposedRows = 64;    // E rows per pass in the transposed product (L1/L2)

/// A thin column-major matrix [rows, cols] copied row-major, each row padded
/// with zeros to `ld` = a multiple of kLanes floats (so a tile never needs a
/// partial load).
struct thin_panel {
  index_t rows = 0, cols = 0, ld = 0;
  std::vector<float, xsimd::aligned_allocator<float>> data;

  explicit thin_panel(const Eigen::MatrixXf& m)
      : rows(m.rows()),
        cols(m.cols()),
        ld((m.cols() + kLanes - 1) / kLanes * kLanes),
        data(static_cast<std::size_t>(rows * ld), 0.0f) {
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) data[static_cast<std::size_t>(r * ld + c)] = m(r, c);
  }
  const float* row(index_t r) const noexcept { return data.data() + r * ld; }
};

/// The first `cols` columns of a row-major [rows, ld] buffer as a column-major matrix.
inline Eigen::MatrixXf unpad(const std::vector<float, xsimd::aligned_allocator<float>>& buf, index_t rows, index_t cols,
                             index_t ld) {
  using padded =
      Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0, Eigen::OuterStride<>>;
  return padded(buf.data(), rows, cols, Eigen::OuterStride<>(ld));
}

/// acc[i][v] (+)= Σ_{j<n} a[i·si + j·sj] · p[j·ldp + v·kLanes], for i < R, v < NV;
/// y[i·ldy + v·kLanes] receives acc. `accumulate` = false starts from 0.
template <int R, int NV>
inline void tile(const float* a, index_t si, index_t sj, index_t n, const float* p, index_t ldp, float* y, index_t ldy,
                 bool accumulate) {
  fbatch acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v)
      acc[i][v] = accumulate ? fbatch::load_unaligned(y + i * ldy + v * kLanes) : fbatch(0.0f);
  for (index_t j = 0; j < n; ++j) {
    fbatch pv[NV];
    for (int v = 0; v < NV; ++v) pv[v] = fbatch::load_aligned(p + j * ldp + v * kLanes);
    const float* aj = a + j * sj;
    for (int i = 0; i < R; ++i) {
      const fbatch ai(aj[i * si]);
      for (int v = 0; v < NV; ++v) acc[i][v] = xsimd::fma(ai, pv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v].store_unaligned(y + i * ldy + v * kLanes);
}

/// Dispatches the row tail (R < kTileRows) and the vector tail (NV < kMaxVectors).
template <int R>
inline void tile_nv(int nv, const float* a, index_t si, index_t sj, index_t n, const float* p, index_t ldp, float* y,
                    index_t ldy, bool accumulate) {
  if (nv == 3)
    tile<R, 3>(a, si, sj, n, p, ldp, y, ldy, accumulate);
  else if (nv == 2)
    tile<R, 2>(a, si, sj, n, p, ldp, y, ldy, accumulate);
  else
    tile<R, 1>(a, si, sj, n, p, ldp, y, ldy, accumulate);
}
template <int R = kTileRows>
inline void tile_any(int rows, int nv, const float* a, index_t si, index_t sj, index_t n, const float* p, index_t ldp,
                     float* y, index_t ldy, bool accumulate) {
  if constexpr (R > 1) {
    if (rows < R) return tile_any<R - 1>(rows, nv, a, si, sj, n, p, ldp, y, ldy, accumulate);
  }
  tile_nv<R>(nv, a, si, sj, n, p, ldp, y, ldy, accumulate);
}

/// Y[i, 0:p.ld] = Σ_j E[i, j] · P[j, :] for i < m, with E [m, p.rows] row-major
/// (leading dimension lde) and Y row-major [m, ldy ≥ p.ld].
inline void rows_times_panel(const float* e, index_t lde, index_t m, const thin_panel& p, float* y, index_t ldy) {
  const index_t vectors = p.ld / kLanes;
  for (index_t j0 = 0; j0 < p.rows; j0 += kReductionChunk) {
    const index_t n = std::min(kReductionChunk, p.rows - j0);
    for (index_t v0 = 0; v0 < vectors; v0 += kMaxVectors) {
      const int nv = static_cast<int>(std::min<index_t>(kMaxVectors, vectors - v0));
      for (index_t i0 = 0; i0 < m; i0 += kTileRows)
        tile_any(static_cast<int>(std::min<index_t>(kTileRows, m - i0)), nv, e + i0 * lde + j0, lde, 1, n,
                 p.row(j0) + v0 * kLanes, p.ld, y + i0 * ldy + v0 * kLanes, ldy, j0 > 0);
    }
  }
}

/// Y[c, 0:p.ld] = Σ_r E[r, c] · P[r, :] for c < nc, with E [p.rows, nc] row-major
/// (leading dimension lde: a column band of a wider matrix) and Y row-major [nc, ldy ≥ p.ld].
inline void rows_transposed_times_panel(const float* e, index_t lde, index_t nc, const thin_panel& p, float* y,
                                        index_t ldy) {
  const index_t vectors = p.ld / kLanes;
  for (index_t r0 = 0; r0 < p.rows; r0 += kTransposedRows) {
    const index_t n = std::min(kTransposedRows, p.rows - r0);
    for (index_t v0 = 0; v0 < vectors; v0 += kMaxVectors) {
      const int nv = static_cast<int>(std::min<index_t>(kMaxVectors, vectors - v0));
      for (index_t c0 = 0; c0 < nc; c0 += kTileRows)
        tile_any(static_cast<int>(std::min<index_t>(kTileRows, nc - c0)), nv, e + r0 * lde + c0, 1, lde, n,
                 p.row(r0) + v0 * kLanes, p.ld, y + c0 * ldy + v0 * kLanes, ldy, r0 > 0);
    }
  }
}

// ---------------------------------------------------------------------------
// The report's sums

/// Σ over a band of E's rows of e², d², dq² and the same weighted by w, with
/// d = e − (A B)ᵀ and dq = e − (Aq Bq)ᵀ, in double.
struct band_sums {
  double e2 = 0, d2 = 0, dq2 = 0;
  double we2 = 0, wd2 = 0, wdq2 = 0;
};

/// The two factor pairs as the residual kernel reads them: Aᵀ and Aqᵀ row-major
/// [k, in] (contiguous along E's rows), B and Bq row-major [k, out] as given.
struct residual_factors {
  index_t k = 0, in = 0, out = 0;
  const float* at = nullptr;   // [k, in]
  const float* aqt = nullptr;  // [k, in]
  const float* b = nullptr;    // [k, out]
  const float* bq = nullptr;   // [k, out]
};

inline constexpr int kResidualRows = 2;           // 2 rows × 4 vectors × 2 versions = 16 accumulators
inline constexpr int kResidualVectors = 4;        // + 8 factor vectors + 4 broadcasts ≤ 32 registers
inline constexpr index_t kResidualColumns = 256;  // Aᵀ and Aqᵀ columns per pass: 2·k·256 floats in L1/L2

struct square_sums {
  // broadcast zero (braces would pick xsimd's element-list constructor)
  dbatch e2 = dbatch(0.0), d2 = dbatch(0.0), dq2 = dbatch(0.0), we2 = dbatch(0.0), wd2 = dbatch(0.0),
         wdq2 = dbatch(0.0);
};

/// Adds d² (exact in double: the product of two floats) and w·d² of one vector
/// of d to the running double sums.
inline void add_squares(const fbatch& d, const float* w, dbatch& s, dbatch& ws) {
  alignas(64) float t[fbatch::size];
  d.store_aligned(t);
  for (std::size_t h = 0; h < fbatch::size; h += dbatch::size) {
    const dbatch dd = dbatch::load_unaligned(t + h);
    const dbatch sq = dd * dd;
    s += sq;
    if (w) ws = xsimd::fma(dbatch::load_unaligned(w + h), sq, ws);
  }
}

/// Rows r..r+R, columns c..c+NV·kLanes. (A B)ᵀ is formed first — a float FMA
/// chain of k terms from 0, |error| ≤ γ_k(u_f)·(|A||B|)ᵀ — then e − that, one
/// more rounding: the bound the report states.
template <int R, int NV>
inline void residual_tile(const float* e, index_t lde, index_t r, index_t c, const residual_factors& f, const float* w,
                          square_sums& s) {
  fbatch p[R][NV], pq[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) p[i][v] = pq[i][v] = fbatch(0.0f);
  for (index_t t = 0; t < f.k; ++t) {
    fbatch a[NV], aq[NV];
    for (int v = 0; v < NV; ++v) {
      a[v] = fbatch::load_unaligned(f.at + t * f.in + c + v * kLanes);
      aq[v] = fbatch::load_unaligned(f.aqt + t * f.in + c + v * kLanes);
    }
    for (int i = 0; i < R; ++i) {
      const fbatch bt(f.b[t * f.out + r + i]), bqt(f.bq[t * f.out + r + i]);
      for (int v = 0; v < NV; ++v) {
        p[i][v] = xsimd::fma(a[v], bt, p[i][v]);
        pq[i][v] = xsimd::fma(aq[v], bqt, pq[i][v]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) {
      const fbatch ev = fbatch::load_unaligned(e + (r + i) * lde + c + v * kLanes);
      const float* wv = w ? w + c + v * kLanes : nullptr;
      add_squares(ev, wv, s.e2, s.we2);
      if (f.k > 0) {
        add_squares(ev - p[i][v], wv, s.d2, s.wd2);
        add_squares(ev - pq[i][v], wv, s.dq2, s.wdq2);
      }
    }
}

template <int R>
inline void residual_rows(const float* e, index_t lde, index_t r, index_t c0, index_t c1, const residual_factors& f,
                          const float* w, square_sums& s) {
  index_t c = c0;
  for (; c + kResidualVectors * kLanes <= c1; c += kResidualVectors * kLanes)
    residual_tile<R, kResidualVectors>(e, lde, r, c, f, w, s);
  for (; c < c1; c += kLanes) residual_tile<R, 1>(e, lde, r, c, f, w, s);
}

/// band_sums of E's rows [r0, r1) (E row-major [out, in], leading dimension
/// lde); w (length in, E[x_i²]) may be null; k = 0 leaves d = e.
inline band_sums residual_band(const float* e, index_t lde, index_t r0, index_t r1, const residual_factors& f,
                               const float* w) {
  square_sums s;
  const index_t full = f.in / kLanes * kLanes;
  for (index_t c0 = 0; c0 < full; c0 += kResidualColumns) {
    const index_t c1 = std::min(c0 + kResidualColumns, full);
    index_t r = r0;
    for (; r + kResidualRows <= r1; r += kResidualRows) residual_rows<kResidualRows>(e, lde, r, c0, c1, f, w, s);
    for (; r < r1; ++r) residual_rows<1>(e, lde, r, c0, c1, f, w, s);
  }
  band_sums out{xsimd::hadd(s.e2),  xsimd::hadd(s.d2),  xsimd::hadd(s.dq2),
                xsimd::hadd(s.we2), xsimd::hadd(s.wd2), xsimd::hadd(s.wdq2)};
  // The columns past the last whole vector: the same expressions, scalar.
  for (index_t r = r0; r < r1; ++r)
    for (index_t c = full; c < f.in; ++c) {
      float p = 0.0f, pq = 0.0f;
      for (index_t t = 0; t < f.k; ++t) {
        p = std::fma(f.at[t * f.in + c], f.b[t * f.out + r], p);
        pq = std::fma(f.aqt[t * f.in + c], f.bq[t * f.out + r], pq);
      }
      const float ef = e[r * lde + c];
      const double ev = ef, wc = w ? w[c] : 0.0;
      out.e2 += ev * ev, out.we2 += wc * (ev * ev);
      if (f.k > 0) {
        const double d = static_cast<double>(ef - p), dq = static_cast<double>(ef - pq);
        out.d2 += d * d, out.dq2 += dq * dq, out.wd2 += wc * (d * d), out.wdq2 += wc * (dq * dq);
      }
    }
  return out;
}

}  // namespace lqer::detail::thin
