// lqer — the avx2 path: AVX2 + FMA + F16C (Haswell and later, Zen 1 and later): vpmaddubsw + vpmaddwd.
// The micro-kernels and the prologue are the shared ymm body in x86_ymm.inl
// (see there for the arithmetic, the overflow bounds and the tile shape),
// compiled here under target("avx2,fma,f16c") in namespace lqer::detail::avx2.
#pragma once

#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "lqer/config.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/arch/common.hpp"
#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/params.hpp"
#include "lqer/kernel/prologue.hpp"

namespace lqer::detail::avx2 {
#define LQER_YMM_TARGET "avx2,fma,f16c"
#define LQER_YMM_DOT 0
#define LQER_YMM_PATH kernel_path::avx2
#include "lqer/kernel/arch/x86_ymm.inl"
#undef LQER_YMM_TARGET
#undef LQER_YMM_DOT
#undef LQER_YMM_PATH
}  // namespace lqer::detail::avx2

namespace lqer::detail {
using avx2_isa = avx2::isa;
template <>
struct path_kernels<path_tag::avx2> {
  using type = avx2_isa;
};
}  // namespace lqer::detail

#endif  // __x86_64__
