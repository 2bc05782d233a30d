// lqer — kernel paths and runtime dispatch.
//
// A path is one family of micro-kernels (one header under kernel/arch/).
// Paths form an explicit fallback chain, best first (as ruy's paths do):
//
//     x86-64:  avx512_vnni → avx_vnni → avx2 → generic
//     AArch64: neon_dotprod → generic
//
// `built_paths()` lists what this build contains (decided at compile time by
// the target architecture only: every x86 path is compiled into every x86-64
// build through function-level target attributes, with no global -m flags);
// `usable_paths()` keeps those this CPU and OS can run; `best_path()` is the
// first usable one. A caller may force any path to `linear()`; a path that is
// not usable makes it throw unsupported_error instead of crashing on SIGILL.
//
// CPU checks are our own (xsimd 8.1 knows no VNNI): CPUID for the instruction
// sets and XGETBV(XCR0) for the OS actually saving the registers they use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lqer/error.hpp"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace lqer {

/// A family of micro-kernels; see the file comment for the fallback order.
enum class kernel_path {
  generic,       ///< portable C++ (auto-vectorized by the compiler for the baseline ISA)
  avx2,          ///< AVX2 + FMA: vpmaddubsw + vpmaddwd (exact for u8 × int4 and |s8| × s8)
  avx_vnni,      ///< AVX2 + AVX-VNNI: VEX vpdpbusd on ymm (Alder Lake, Zen 5)
  avx512_vnni,   ///< AVX-512 F/BW/VL + VNNI: vpdpbusd on zmm (Cascade Lake, Ice Lake, Zen 4)
  neon_dotprod,  ///< AArch64 Advanced SIMD + dot product: sdot (Armv8.2-A+dotprod)
};

inline const char* to_string(kernel_path p) noexcept {
  switch (p) {
    case kernel_path::generic: return "generic";
    case kernel_path::avx2: return "avx2";
    case kernel_path::avx_vnni: return "avx_vnni";
    case kernel_path::avx512_vnni: return "avx512_vnni";
    case kernel_path::neon_dotprod: return "neon_dotprod";
  }
  return "?";
}

/// Parses a path name as to_string prints it; throws value_error otherwise.
inline kernel_path parse_kernel_path(const std::string& name) {
  for (kernel_path p : {kernel_path::generic, kernel_path::avx2, kernel_path::avx_vnni, kernel_path::avx512_vnni,
                        kernel_path::neon_dotprod})
    if (name == to_string(p)) return p;
  throw value_error("unknown kernel path '" + name +
                    "' (expected generic, avx2, avx_vnni, avx512_vnni or neon_dotprod)");
}

namespace detail {

/// What the CPU (and the OS, via XCR0) lets us run.
struct cpu_features {
  bool avx2 = false;         // AVX2 + FMA + OS-enabled ymm state
  bool avx_vnni = false;     // the above + AVX-VNNI (CPUID.(7,1):EAX[4])
  bool avx512_vnni = false;  // AVX-512 F/BW/VL/VNNI + OS-enabled opmask/zmm state
  bool neon_dotprod = false;
};

#if defined(__x86_64__)
// NOLINTNEXTLINE(readability-non-const-parameter): r is written by the asm outputs, which clang-tidy does not see.
inline void cpuid(std::uint32_t leaf, std::uint32_t subleaf, std::uint32_t r[4]) noexcept {
  __asm__ __volatile__("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(subleaf));
}
// XGETBV by inline asm: the _xgetbv intrinsic needs -mxsave.
inline std::uint64_t xgetbv0() noexcept {
  std::uint32_t lo = 0, hi = 0;
  __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
}
#endif

inline cpu_features detect_cpu_features() noexcept {
  cpu_features f;
#if defined(__x86_64__)
  std::uint32_t r[4];
  cpuid(0, 0, r);
  const std::uint32_t max_leaf = r[0];
  cpuid(1, 0, r);
  const bool fma = (r[2] >> 12) & 1, osxsave = (r[2] >> 27) & 1, avx = (r[2] >> 28) & 1;
  if (!osxsave || !avx || max_leaf < 7) return f;
  const std::uint64_t xcr0 = xgetbv0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;    // XMM (bit 1) + YMM (bit 2)
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;  // + opmask (5), ZMM_Hi256 (6), Hi16_ZMM (7)
  cpuid(7, 0, r);
  const std::uint32_t max_sub = r[0];
  const bool avx2 = (r[1] >> 5) & 1;
  const bool avx512f = (r[1] >> 16) & 1, avx512bw = (r[1] >> 30) & 1, avx512vl = (r[1] >> 31) & 1;
  const bool avx512vnni = (r[2] >> 11) & 1;
  bool avxvnni = false;
  if (max_sub >= 1) {
    cpuid(7, 1, r);
    avxvnni = (r[0] >> 4) & 1;
  }
  f.avx2 = avx2 && fma && ymm_state;
  f.avx_vnni = f.avx2 && avxvnni;
  f.avx512_vnni = f.avx2 && zmm_state && avx512f && avx512bw && avx512vl && avx512vnni;
#elif defined(__aarch64__) && defined(__linux__)
  // HWCAP_ASIMDDP = 1 << 20 in AT_HWCAP (Linux arm64 ABI).
  f.neon_dotprod = (getauxval(AT_HWCAP) >> 20) & 1;
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
  f.neon_dotprod = true;  // compiled for a dotprod target: the CPU has it by definition
#endif
  return f;
}

inline const cpu_features& cpu() noexcept {
  static const cpu_features f = detect_cpu_features();
  return f;
}

}  // namespace detail

/// Paths compiled into this build, best first.
inline std::vector<kernel_path> built_paths() {
#if defined(__x86_64__)
  return {kernel_path::avx512_vnni, kernel_path::avx_vnni, kernel_path::avx2, kernel_path::generic};
#elif defined(__aarch64__)
  return {kernel_path::neon_dotprod, kernel_path::generic};
#else
  return {kernel_path::generic};
#endif
}

/// Whether `p` is compiled in and this CPU/OS can run it.
inline bool is_usable(kernel_path p) noexcept {
  const auto& f = detail::cpu();
  switch (p) {
    case kernel_path::generic: return true;
#if defined(__x86_64__)
    case kernel_path::avx2: return f.avx2;
    case kernel_path::avx_vnni: return f.avx_vnni;
    case kernel_path::avx512_vnni: return f.avx512_vnni;
#elif defined(__aarch64__)
    case kernel_path::neon_dotprod: return f.neon_dotprod;
#endif
    default: return false;
  }
}

/// Built paths this CPU can run, best first (always ends with generic).
inline std::vector<kernel_path> usable_paths() {
  std::vector<kernel_path> out;
  for (kernel_path p : built_paths())
    if (is_usable(p)) out.push_back(p);
  return out;
}

/// The first usable path of the fallback chain.
inline kernel_path best_path() noexcept {
  static const kernel_path best = [] {
    for (kernel_path p :
         {kernel_path::avx512_vnni, kernel_path::avx_vnni, kernel_path::avx2, kernel_path::neon_dotprod})
      if (is_usable(p)) return p;
    return kernel_path::generic;
  }();
  return best;
}

/// Throws unsupported_error unless `p` is usable here.
inline void require_usable(kernel_path p) {
  if (!is_usable(p))
    throw unsupported_error(std::string("kernel path ") + to_string(p) +
                            " is not usable here: it is not built for this architecture or this CPU lacks it");
}

}  // namespace lqer
