// Test support: whole-file reads and writes, .npy files made by hand, and
// snapshots of a directory (the bad-input matrices check that a refused input
// leaves everything byte-identical).
//
// npy_bytes writes the format as numpy does (magic, version 1.0, u16 header
// length, the dict padded with spaces to a 64-byte boundary and '\n', then the
// data) without lqer::io, so that readers and the CLI are tested against the
// file format rather than against lqer's own writer. Tests that need a broken
// file start from these bytes and cut or corrupt them.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace lqer::test {

/// A fresh directory under the system temp directory (named after `tag`),
/// removed with its contents (write permission restored first, for tests that
/// take it away) when the test ends.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(const std::string& tag) {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("lqer_test_" + tag + "_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  /// The names in the directory, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

/// The what() of the `E` that `f` throws; a different exception propagates
/// (and fails the test), no exception fails the test.
template <class E, class F>
std::string thrown_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL_CHECK("expected an exception, none was thrown");
  return {};
}

/// `part` occurs in `s` (a message, a program's output).
inline bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

/// The whole file as bytes ("" when it cannot be opened).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Replaces the file with `bytes`; a failed write fails the test.
inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

/// A .npy v1.0 file: `descr` e.g. "<f4", `shape` a Python tuple e.g. "(2, 3)",
/// `data` the raw little-endian elements.
inline std::string npy_bytes(const std::string& descr, const std::string& shape, const std::string& data) {
  std::string dict = "{'descr': '";
  dict += descr;
  dict += "', 'fortran_order': False, 'shape': ";
  dict += shape;
  dict += ", }";
  while ((10 + dict.size() + 1) % 64 != 0) dict += ' ';
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  out += dict;
  out += data;
  return out;
}

/// The raw bytes of a vector's elements (the data part of a .npy file).
template <class T>
std::string raw(const std::vector<T>& v) {
  std::string s(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(s.data(), v.data(), s.size());
  return s;
}

/// Every entry under `dir` (recursively), by relative path: a regular file
/// maps to its bytes, a directory to "<dir>", a symbolic link to "<link target>"
/// (unread: fixtures link large read-only files instead of copying them).
inline std::map<std::string, std::string> snapshot(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::map<std::string, std::string> m;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    if (e.is_symlink()) {
      std::string link = "<link ";  // appended piece by piece: GCC 12's false -Wrestrict (bug 105651)
      link += fs::read_symlink(e.path()).string();
      m[rel] = link + ">";
    } else {
      m[rel] = e.is_directory() ? std::string("<dir>") : slurp(e.path());
    }
  }
  return m;
}

/// What changed between two snapshots ("created x; modified y; removed z; "), "" when nothing.
inline std::string differences(const std::map<std::string, std::string>& before,
                               const std::map<std::string, std::string>& after) {
  std::string d;
  for (const auto& [k, v] : after) {
    const auto it = before.find(k);
    if (it == before.end())
      d += "created " + k + "; ";
    else if (it->second != v)
      d += "modified " + k + "; ";
  }
  for (const auto& kv : before)
    if (!after.count(kv.first)) d += "removed " + kv.first + "; ";
  return d;
}

/// A bad-input matrix's directories: `root` holds "template/", which the
/// fixture fills once, and one fresh copy of it per cell (cell()); `root` is
/// removed at the end. Links in the template stay links in the copies.
struct cell_directories {
  std::filesystem::path root;
  std::filesystem::path tmpl;

  explicit cell_directories(std::filesystem::path dir) : root(std::move(dir)), tmpl(root / "template") {
    std::filesystem::remove_all(root);
    std::filesystem::create_directories(tmpl);
  }
  cell_directories(const cell_directories&) = delete;
  cell_directories& operator=(const cell_directories&) = delete;
  ~cell_directories() {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }

  /// A fresh copy of the template for one cell.
  std::filesystem::path cell(const std::string& name) const {
    const std::filesystem::path d = root / name;
    std::filesystem::remove_all(d);
    std::filesystem::copy(tmpl, d,
                          std::filesystem::copy_options::recursive | std::filesystem::copy_options::copy_symlinks);
    return d;
  }
};

}  // namespace lqer::test
