// Dispatch: the fallback chain, names, and our CPUID checks against the
// compiler's own CPU detection where it knows the feature.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/layout.hpp"

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

// The chain is one list of self-describing tags; everything above is generated
// from it, so these check the list itself and the generation.
TEST_CASE("dispatch: the path tags describe themselves and generate the names") {
  std::vector<kernel_path> chain;
  std::string parse_error;
  detail::any_path(
      [&]<class T>(T) {
        INFO(T::kName);
        CHECK(std::string(to_string(T::kPath)) == T::kName);
        CHECK(parse_kernel_path(T::kName) == T::kPath);
        CHECK(std::is_same_v<path_tag_of<T::kPath>, T>);
        CHECK(std::is_same_v<typename T::layout, layout_n16c4>);
        CHECK(is_usable(T::kPath) == (T::kBuilt && T::available(detail::cpu())));
        const auto built = built_paths();
        CHECK((std::find(built.begin(), built.end(), T::kPath) != built.end()) == T::kBuilt);
        chain.push_back(T::kPath);
        return false;
      },
      kernel_paths{});
  // Every enumerator exactly once, generic last.
  REQUIRE(chain.size() == 5);
  for (auto p : {kernel_path::generic, kernel_path::avx2, kernel_path::avx_vnni, kernel_path::avx512_vnni,
                 kernel_path::neon_dotprod})
    CHECK(std::count(chain.begin(), chain.end(), p) == 1);
  CHECK(chain.back() == kernel_path::generic);
  // built_paths keeps the chain's order; best_path is the first usable.
  const auto built = built_paths();
  std::vector<kernel_path> built_in_order;
  for (auto p : chain)
    if (std::find(built.begin(), built.end(), p) != built.end()) built_in_order.push_back(p);
  CHECK(built_in_order == built);
  CHECK(best_path() == usable_paths().front());
  // The parse error names every path (generated from the same list).
  try {
    (void)parse_kernel_path("avx1024");
    FAIL("parse_kernel_path accepted an unknown name");
  } catch (const value_error& e) {
    parse_error = e.what();
  }
  for (auto p : chain) CHECK(parse_error.find(to_string(p)) != std::string::npos);
}
