// Prints which of lqer's kernel paths this build has and which this CPU runs,
// one line each, and the best one; scripts/test.sh and scripts/bench.sh print
// it first, so every log says which paths its tests and timings exercised.
#include <cstdio>
#include <string>

#include "lqer/kernel/dispatch.hpp"

int main() {
  std::string usable, missing;
  for (lqer::kernel_path p : lqer::built_paths()) {
    std::string& list = lqer::is_usable(p) ? usable : missing;
    list += (list.empty() ? "" : ", ") + std::string(lqer::to_string(p));
  }
  std::printf("kernel paths usable on this CPU: %s\n", usable.c_str());
  std::printf("kernel paths this CPU lacks (their tests are skipped): %s\n", missing.empty() ? "none" : missing.c_str());
  std::printf("best path: %s\n", lqer::to_string(lqer::best_path()));
  return 0;
}
