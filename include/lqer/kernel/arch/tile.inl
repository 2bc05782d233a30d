// lqer — the micro-tile, composed: one body for every path (no include guard:
// included once per path, inside the path's namespace and under its target
// attribute, Highway-style — a template shared across target attributes
// cannot inline their intrinsics, so each path compiles its own copy).
//
// The includer defines LQER_TILE_ATTR (the path's target attribute, possibly
// empty) and provides, in its namespace:
//
//   struct vec                     the path's float vector for the epilogue:
//     using reg, mask;             a register of kLanes floats, a tail mask
//     kLanes                       floats per register (1, 4, 8 or 16)
//     mask tail(int left)          the first min(left, kLanes) lanes (left ≤ 0: none)
//     reg zero(), add(reg, reg)
//     reg load(const float*, mask) the masked lanes, 0 elsewhere; reads nothing else
//     reg load_full(const float*)  kLanes floats
//     void store(float*, mask, reg) writes the masked lanes only
//
//   segment<MR, NV, Block, K, WR, S>(acc, x, w, nblk, group_stride, wfrac, prefetch)
//                                  the path's core: one operand's blocks (Wq's or
//                                  B's: codes of kind K, records (scale, zero point) of kind WR) of the
//                                  tile accumulated into acc[MR][NV · 16 / kLanes]
//                                  (params.hpp's arithmetic), following the
//                                  prefetch_hint as far as the path does
//
// and gets gemm_qmx8_f32_qmxw_n16c4<MR, NV, Block, K0, Corr, S, WR0, WR1>(const tile_args&):
// MR rows × NV groups of 16 outputs; activations int8 codes, weights codes of
// kind K0 and records of kind WR0, the correction's byte codes (records WR1) as
// a second segment, f32 out (the namespace names the ISA). What every path does alike lives here once: the
// tail masks of the last group (its padding outputs are never read from y nor
// written to it), the accumulators' start (0, or y's partial sums when the
// driver blocks K), the correction segment and the bias on the last K chunk,
// and the masked store.

#if !defined(LQER_TILE_ATTR)
#error "tile.inl: define LQER_TILE_ATTR (the path's target attribute) before including it"
#endif

template <int MR, int NV, int Block, code_kind K0, bool Corr, scale_mode S, record_kind WR0 = record_kind{},
          record_kind WR1 = record_kind{}>
LQER_TILE_ATTR void gemm_qmx8_f32_qmxw_n16c4(const tile_args& a) {
  constexpr int kGroup = layout_n16c4::kGroup;
  static_assert(kGroup % vec::kLanes == 0, "tile.inl: a group must be a whole number of the path's registers");
  constexpr int kParts = kGroup / vec::kLanes;  // registers per group
  constexpr int P = NV * kParts;                // register columns of the tile: part p % kParts of group p / kParts
  typename vec::mask mask[P];
  LQER_UNROLL(16)
  for (int p = 0; p < P; ++p) mask[p] = vec::tail(a.n_valid - vec::kLanes * p);
  typename vec::reg acc[MR][P];
  LQER_UNROLL(8)
  for (int m = 0; m < MR; ++m) {
    LQER_UNROLL(16)
    for (int p = 0; p < P; ++p)
      acc[m][p] = a.load_acc ? vec::load(a.y + m * a.ldy + vec::kLanes * p, mask[p]) : vec::zero();
  }
  segment<MR, NV, Block, K0, WR0, S>(acc, a.x0, a.w0, a.nblk0, a.group_stride, a.wfrac0, a.prefetch);
  if (a.finish) {
    if constexpr (Corr)
      segment<MR, NV, Block, code_kind::byte, WR1, S>(acc, a.x1, a.w1, a.nblk1, a.group_stride, a.wfrac1,
                                                      prefetch_hint{});
    if (a.bias) {
      LQER_UNROLL(16)
      for (int p = 0; p < P; ++p) {
        // The bias is the group's last record: kGroup floats, part p % kParts of group p / kParts.
        const typename vec::reg bias = vec::load_full(reinterpret_cast<const float*>(
            reinterpret_cast<const std::uint8_t*>(a.bias) + (p / kParts) * a.group_stride +
            (p % kParts) * vec::kLanes * static_cast<index_t>(sizeof(float))));
        LQER_UNROLL(8)
        for (int m = 0; m < MR; ++m) acc[m][p] = vec::add(acc[m][p], bias);
      }
    }
  }
  LQER_UNROLL(16)
  for (int p = 0; p < P; ++p) {
    if (a.n_valid - vec::kLanes * p <= 0) break;
    LQER_UNROLL(8)
    for (int m = 0; m < MR; ++m) vec::store(a.y + m * a.ldy + vec::kLanes * p, mask[p], acc[m][p]);
  }
}
