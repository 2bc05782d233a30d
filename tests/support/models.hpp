// Where the tests find the real models that scripts/fetch_*.sh put in the
// cache (never committed): one place for the lookup rules, so every test that
// needs a model agrees on them.
#pragma once

#include <cstdlib>
#include <filesystem>

namespace lqer_test {

/// The cache root: $LQER_CACHE, else ~/.cache/lqer (as scripts/fetch_*.sh).
inline std::filesystem::path model_cache() {
  if (const char* c = std::getenv("LQER_CACHE"); c != nullptr && *c != '\0') return c;
  if (const char* h = std::getenv("HOME"); h != nullptr) return std::filesystem::path(h) / ".cache" / "lqer";
  return ".cache/lqer";
}

/// SmolLM2-135M-Instruct's GGUF: $LQER_SMOLLM2_GGUF, else where
/// scripts/fetch_smollm2.sh puts it. The file may not exist: callers skip then.
inline std::filesystem::path smollm2_gguf() {
  if (const char* p = std::getenv("LQER_SMOLLM2_GGUF"); p != nullptr && *p != '\0') return p;
  return model_cache() / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace lqer_test
