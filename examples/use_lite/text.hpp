// use_lite — reading sentence files and finding the default cache paths.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <lqer/error.hpp>
#include <string>
#include <vector>

namespace use_lite {

/// One sentence per line, verbatim: nothing is trimmed (a '\r' before the
/// '\n' stays part of the sentence, as do leading spaces). A final newline
/// does not start another sentence; an empty line is an empty sentence.
inline std::vector<std::string> read_lines(const std::filesystem::path& path) {
  // An ifstream opens a directory on Linux and reads nothing from it: without
  // this check a directory would pass for a file with no sentences.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw lqer::io_error(path.string() + ": is a directory, not a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw lqer::io_error(path.string() + ": cannot open for reading");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw lqer::io_error(path.string() + ": read error");
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t nl = text.find('\n', start);
    if (nl == std::string::npos) {
      lines.push_back(text.substr(start));
      break;
    }
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

/// Where scripts/fetch_use_lite.sh puts things: $LQER_CACHE/use_lite (LQER_CACHE
/// defaults to ~/.cache/lqer). `LQER_USE_LITE_MODEL` overrides the model
/// directory alone (the tests read it too).
inline std::filesystem::path cache_root() {
  if (const char* c = std::getenv("LQER_CACHE"); c && *c) return std::filesystem::path(c) / "use_lite";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : ".") / ".cache" / "lqer" / "use_lite";
}
inline std::filesystem::path default_model_dir() {
  if (const char* m = std::getenv("LQER_USE_LITE_MODEL"); m && *m) return m;
  return cache_root() / "model";
}
inline std::filesystem::path default_calib_file() { return cache_root() / "text" / "calib.txt"; }
inline std::filesystem::path default_eval_file() { return cache_root() / "text" / "eval.txt"; }

}  // namespace use_lite
