// lqer — the avx_vnni path: AVX2 + AVX-VNNI (Alder Lake, Sapphire Rapids, Zen 5): VEX-encoded vpdpbusd on ymm.
// The micro-kernels and the prologue are the shared ymm body in x86_ymm.inl
// (see there for the arithmetic, the overflow bounds and the tile shape),
// compiled here under target("avx2,fma,f16c,avxvnni") in namespace lqer::detail::avx_vnni.
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

namespace lqer::detail::avx_vnni {
#define LQER_YMM_TARGET "avx2,fma,f16c,avxvnni"
#define LQER_YMM_DOT 1
#define LQER_YMM_PATH kernel_path::avx_vnni
#include "lqer/kernel/arch/x86_ymm.inl"
#undef LQER_YMM_TARGET
#undef LQER_YMM_DOT
#undef LQER_YMM_PATH
}  // namespace lqer::detail::avx_vnni

namespace lqer::detail {
using avx_vnni_isa = avx_vnni::isa;
template <>
struct path_kernels<path_tag::avx_vnni> {
  using type = avx_vnni_isa;
};
}  // namespace lqer::detail

#endif  // __x86_64__
