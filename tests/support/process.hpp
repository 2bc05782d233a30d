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

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
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

/// Runs the program on `args` with its stderr on a pipe, reads that pipe
/// until it holds `cue` (a line the program prints once it is inside its
/// long work), then sends `sig` and waits for the program to end. Returns
/// its exit code (-1: killed by a signal, or `cue` never came and it ended by
/// itself: then the signal was never sent) and all of its stderr; stdout goes
/// to /dev/null. What the test then checks is the program's reaction to a
/// signal at that point: the cue makes the moment deterministic, not a sleep.
inline run_result run_and_signal_at(const std::vector<std::string>& args, const std::string& cue, int sig) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // the child: only async-signal-safe calls until exec
    ::close(fds[0]);
    ::dup2(fds[1], STDERR_FILENO);
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
    std::vector<char*> argv;
    std::string program = LQER_CLI_PATH;
    argv.push_back(program.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(program.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  run_result r;
  bool sent = false;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    r.err.append(buf, static_cast<std::size_t>(n));
    if (!sent && r.err.find(cue) != std::string::npos) {
      ::kill(pid, sig);
      sent = true;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  r.exit_code = sent && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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
