// Test support: the `lqer` program run as a child process, as a user runs it,
// with its exit code, stdout and stderr captured.
//
// POSIX only: std::system hands the command line to /bin/sh, whose
// redirections do the capturing (stdout and stderr into files that are read
// back whole, so nothing is lost to a pipe buffer) and give the program
// /dev/null as stdin (it never reads stdin; a run that tried would otherwise
// wait on the test's terminal). The environment is the test's own, unchanged,
// and there is no timeout of its own: a hung program hangs the test until
// ctest's --timeout, if one is given, ends it.
//
// The test target defines LQER_CLI_PATH, the built program (see
// tests/tools/CMakeLists.txt and tests/factorize/CMakeLists.txt).
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "support/files.hpp"

#ifndef LQER_CLI_PATH
#error "LQER_CLI_PATH must name the built lqer program"
#endif

namespace lqer::test {

/// What one run of the program left behind.
struct run_result {
  int exit_code = -1;  // -1 when it did not exit normally (killed by a signal)
  std::string out;     // everything written on stdout
  std::string err;     // everything written on stderr
};

/// `s` as one shell word: single-quoted, each ' written as '\'', so that paths
/// and values reach the program byte for byte, spaces and quotes included.
/// Appended piece by piece: GCC 12 warns falsely (-Wrestrict, GCC bug 105651)
/// on `"literal" + std::string&&` once inlined at -O2/-O3.
inline std::string shell_quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  q += '\'';
  return q;
}

/// Runs `lqer args...` (each argument one argv entry, never split or expanded
/// by the shell) and waits for it. stdout and stderr pass through stdout.txt
/// and stderr.txt in `io_dir`, an existing directory, and are removed once read,
/// so that a test can check that directory for files the program left behind.
/// Tests that compare a directory before and after the run pass an `io_dir`
/// outside it.
inline run_result run_lqer(const std::filesystem::path& io_dir, const std::vector<std::string>& args) {
  std::string cmd = shell_quoted(LQER_CLI_PATH);
  for (const auto& a : args) {
    cmd += ' ';
    cmd += shell_quoted(a);
  }
  const std::filesystem::path out = io_dir / "stdout.txt", err = io_dir / "stderr.txt";
  cmd += " >";
  cmd += shell_quoted(out.string());
  cmd += " 2>";
  cmd += shell_quoted(err.string());
  cmd += " </dev/null";
  const int raw_status = std::system(cmd.c_str());
  run_result r;
  r.exit_code = WIFEXITED(raw_status) ? WEXITSTATUS(raw_status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  std::error_code ec;
  std::filesystem::remove(out, ec);
  std::filesystem::remove(err, ec);
  return r;
}

/// A single line: the message, a newline, nothing else (how the CLIs report an error).
inline bool one_line(const std::string& s) { return !s.empty() && s.back() == '\n' && s.find('\n') == s.size() - 1; }

/// One bad-input cell: runs the program on `args`, which must be refused with
/// exit status 2, nothing on stdout, one line on stderr containing every
/// `needle` (the file or option, the problem), and `d` left byte-identical.
/// `io_dir` takes the captured output: outside `d`, whose snapshot is compared.
inline void check_refused(const std::filesystem::path& io_dir, const std::filesystem::path& d,
                          const std::vector<std::string>& args, const std::vector<std::string>& needles) {
  const auto before = snapshot(d);
  const run_result r = run_lqer(io_dir, args);
  CAPTURE(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.out.empty());
  CHECK(one_line(r.err));
  for (const auto& n : needles) CHECK_MESSAGE(contains(r.err, n), "stderr should name: ", n);
  const std::string diff = differences(before, snapshot(d));
  CHECK_MESSAGE(diff.empty(), diff);
}

}  // namespace lqer::test
