// Dispatch: the fallback chain, names, and our CPUID checks against the
// compiler's own CPU detection where it knows the feature.
#include <doctest/doctest.h>

#include <algorithm>

#include "lqer/kernel/dispatch.hpp"

using namespace lqer;

TEST_CASE("dispatch: built, usable and best paths") {
  const auto built = built_paths();
  const auto usable = usable_paths();
  REQUIRE(!built.empty());
  CHECK(built.back() == kernel_path::generic);
  CHECK(usable.back() == kernel_path::generic);
  for (auto p : usable) CHECK(std::find(built.begin(), built.end(), p) != built.end());
  CHECK(best_path() == usable.front());
  CHECK(is_usable(kernel_path::generic));
  for (auto p : built) {
    INFO(std::string(to_string(p)));
    CHECK(parse_kernel_path(to_string(p)) == p);
    if (is_usable(p))
      CHECK_NOTHROW(require_usable(p));
    else
      CHECK_THROWS_AS(require_usable(p), unsupported_error);
  }
  CHECK_THROWS_AS(parse_kernel_path("sse9"), value_error);
  std::string names;
  for (auto p : built) names += std::string(to_string(p)) + (is_usable(p) ? "(usable) " : "(not usable) ");
  MESSAGE("kernel paths: " << names);
}

#if defined(__x86_64__) && defined(__GNUC__)
TEST_CASE("dispatch: CPUID checks agree with __builtin_cpu_supports") {
  CHECK(is_usable(kernel_path::avx2) == (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")));
  CHECK(is_usable(kernel_path::avx512_vnni) ==
        (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")));
  CHECK(!is_usable(kernel_path::neon_dotprod));
}
#endif
