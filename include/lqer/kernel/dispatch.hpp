// lqer — kernel paths and runtime dispatch.
//
// A path is one family of micro-kernels (one header under kernel/arch/).
// Paths form an explicit fallback chain, best first (as ruy's paths do), and
// the chain is one list of self-describing tags (`kernel_paths` below):
//
//     avx512_vnni → avx_vnni → avx2 → neon_dotprod → generic
//     (x86-64 builds have the first three, AArch64 builds neon_dotprod)
//
// Adding a path: an enumerator, a tag in path_tag with its CPU check (and
// cpu_features' field), its place in kernel_paths, and its header under
// kernel/arch/ (a kernel struct deriving from the tag, specializing
// detail::path_kernels; linear.hpp includes the header).
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
#include <type_traits>
#include <vector>

#include "lqer/error.hpp"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace lqer {

/// A family of micro-kernels; see the file comment for the fallback order.
enum class kernel_path {
  generic,       ///< portable C++ (auto-vectorized by the compiler for the baseline ISA)
  avx2,          ///< AVX2 + FMA + F16C: vpmaddubsw + vpmaddwd (exact for u8 × int4 and |s8| × s8)
  avx_vnni,      ///< AVX2 + AVX-VNNI: VEX vpdpbusd on ymm (Alder Lake, Zen 5)
  avx512_vnni,   ///< AVX-512 F/BW/VL + VNNI: vpdpbusd on zmm (Cascade Lake, Ice Lake, Zen 4)
  neon_dotprod,  ///< AArch64 Advanced SIMD + dot product: sdot (Armv8.2-A+dotprod)
};

namespace detail {

/// What the CPU (and the OS, via XCR0) lets us run.
struct cpu_features {
  bool avx2 = false;         // AVX2 + FMA + F16C (fp16 block scales) + OS-enabled ymm state
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
  const bool fma = (r[2] >> 12) & 1, osxsave = (r[2] >> 27) & 1, avx = (r[2] >> 28) & 1, f16c = (r[2] >> 29) & 1;
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
  f.avx2 = avx2 && fma && f16c && ymm_state;  // every AVX2 CPU has F16C (Ivy Bridge, Piledriver on)
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

#if defined(__x86_64__)
inline constexpr bool kTargetX86_64 = true;
#else
inline constexpr bool kTargetX86_64 = false;
#endif
#if defined(__aarch64__)
inline constexpr bool kTargetAArch64 = true;
#else
inline constexpr bool kTargetAArch64 = false;
#endif

}  // namespace detail

struct layout_n16c4;  // kernel/layout.hpp: the packed stream the paths below consume

// ---------------------------------------------------------------------------
// The paths, each described by its tag: its enumerator, its name, whether this
// build compiles it (by target architecture only), what the CPU must have, and
// the packed layout its micro-kernels consume. The micro-kernels themselves
// live in kernel/arch/<name>.hpp, whose kernel struct derives from the tag.

namespace path_tag {
/// What a tag says. `Feature` is the cpu_features flag the path needs (null:
/// none, every CPU runs it); `Built`, whether this build compiles it.
template <kernel_path P, bool Built, bool detail::cpu_features::*Feature, class Layout>
struct describe {
  static constexpr kernel_path kPath = P;
  static constexpr bool kBuilt = Built;
  static bool available(const detail::cpu_features& f) noexcept { return Feature == nullptr || f.*Feature; }
  using layout = Layout;
};

struct avx512_vnni
    : describe<kernel_path::avx512_vnni, detail::kTargetX86_64, &detail::cpu_features::avx512_vnni, layout_n16c4> {
  static constexpr const char* kName = "avx512_vnni";
};
struct avx_vnni
    : describe<kernel_path::avx_vnni, detail::kTargetX86_64, &detail::cpu_features::avx_vnni, layout_n16c4> {
  static constexpr const char* kName = "avx_vnni";
};
struct avx2 : describe<kernel_path::avx2, detail::kTargetX86_64, &detail::cpu_features::avx2, layout_n16c4> {
  static constexpr const char* kName = "avx2";
};
struct neon_dotprod
    : describe<kernel_path::neon_dotprod, detail::kTargetAArch64, &detail::cpu_features::neon_dotprod, layout_n16c4> {
  static constexpr const char* kName = "neon_dotprod";
};
struct generic : describe<kernel_path::generic, true, nullptr, layout_n16c4> {
  static constexpr const char* kName = "generic";
};
}  // namespace path_tag

template <class... Tags>
struct path_list {};

/// The fallback chain, best first: the one list of kernel paths. Names,
/// parsing, built_paths(), is_usable(), best_path() and linear()'s dispatch
/// are all generated from it. It ends with generic, which every build has and
/// every CPU runs.
using kernel_paths =
    path_list<path_tag::avx512_vnni, path_tag::avx_vnni, path_tag::avx2, path_tag::neon_dotprod, path_tag::generic>;

namespace detail {
template <class Tag, class... Tags>
constexpr bool ends_with_generic(path_list<Tag, Tags...>) noexcept {
  if constexpr (sizeof...(Tags) == 0)
    return std::is_same_v<Tag, path_tag::generic>;
  else
    return ends_with_generic(path_list<Tags...>{});
}
static_assert(ends_with_generic(kernel_paths{}), "kernel_paths: the chain must end with the generic path");

/// Calls f(Tag{}) for every tag of the chain, best first, until f returns true.
template <class F, class... Tags>
constexpr bool any_path(F&& f, path_list<Tags...>) {
  return (f(Tags{}) || ...);
}

template <kernel_path P, class Tag, class... Tags>
constexpr auto tag_for(path_list<Tag, Tags...>) {
  if constexpr (Tag::kPath == P)
    return Tag{};
  else
    return tag_for<P>(path_list<Tags...>{});
}

/// The micro-kernels of a path: each kernel/arch header specializes this for
/// its tag with `using type = <its kernel struct>` (a struct deriving from the
/// tag). Declared only: dispatching to a built path whose header was not
/// included fails to compile.
template <class Tag>
struct path_kernels;
}  // namespace detail

/// The tag of a path (compile time).
template <kernel_path P>
using path_tag_of = decltype(detail::tag_for<P>(kernel_paths{}));

/// The path's name ("avx512_vnni"), as parse_kernel_path reads it.
inline const char* to_string(kernel_path p) noexcept {
  const char* name = "?";
  detail::any_path([&]<class T>(T) { return T::kPath == p && (name = T::kName, true); }, kernel_paths{});
  return name;
}

/// Parses a path name as to_string prints it; throws value_error otherwise.
inline kernel_path parse_kernel_path(const std::string& name) {
  kernel_path out = kernel_path::generic;
  std::string known;
  if (detail::any_path(
          [&]<class T>(T) {
            known += (known.empty() ? "" : ", ") + std::string(T::kName);
            return name == T::kName && (out = T::kPath, true);
          },
          kernel_paths{}))
    return out;
  throw value_error("unknown kernel path '" + name + "' (expected one of " + known + ")");
}

/// Paths compiled into this build, best first.
inline std::vector<kernel_path> built_paths() {
  std::vector<kernel_path> out;
  detail::any_path(
      [&]<class T>(T) {
        if (T::kBuilt) out.push_back(T::kPath);
        return false;
      },
      kernel_paths{});
  return out;
}

/// Whether `p` is compiled in and this CPU/OS can run it.
inline bool is_usable(kernel_path p) noexcept {
  bool usable = false;
  detail::any_path(
      [&]<class T>(T) { return T::kPath == p && (usable = T::kBuilt && T::available(detail::cpu()), true); },
      kernel_paths{});
  return usable;
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
    kernel_path p = kernel_path::generic;
    detail::any_path([&]<class T>(T) { return T::kBuilt && T::available(detail::cpu()) && (p = T::kPath, true); },
                     kernel_paths{});
    return p;
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
