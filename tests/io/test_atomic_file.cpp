// The pieces of lqer's atomic writes (include/lqer/io/atomic_file.hpp):
// temporary names, exclusive creation that never follows a planted symlink,
// cleanup, and the write loop. write_file_atomically itself is tested through
// write_npy in test_npy.cpp (modes, read-only targets, long names, failures).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "lqer/io/atomic_file.hpp"
#include "support/files.hpp"

namespace fs = std::filesystem;
using namespace lqer;
using namespace lqer::io::detail;

using lqer::test::contains;
using lqer::test::temp_dir;
using lqer::test::thrown_message;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
  REQUIRE(out.good());
}

/// A name source that returns `names` in turn (the last one forever).
auto names_in_turn(std::vector<std::string> names) {
  return [names = std::move(names), i = std::size_t{0}]() mutable { return names[std::min(i++, names.size() - 1)]; };
}

}  // namespace

TEST_CASE("temporary names are short, fixed-prefix and distinct") {
  const std::string a = random_temporary_name(), b = random_temporary_name();
  CHECK(a.rfind(".lqer-tmp-", 0) == 0);
  CHECK(a.size() == 26);  // whatever the target's name: any legal target name leaves room
  CHECK(a != b);
  CHECK(temporary_directory_of("w.npy") == fs::path("."));
  CHECK(temporary_directory_of("out/w.npy") == fs::path("out"));
}

TEST_CASE("open_new_file never opens an existing name, and never through a symlink") {
  temp_dir dir("atomic"), elsewhere("atomic_elsewhere");
  write_text(elsewhere.path / "victim", "secret");
  fs::create_symlink(elsewhere.path / "victim", dir.path / "planted");
  errno = 0;
  CHECK(open_new_file(dir.path / "planted", 0666) == -1);
  CHECK(errno == EEXIST);
  // A dangling link too: following it would create the file it names.
  fs::create_symlink(elsewhere.path / "created_through_link", dir.path / "dangling");
  CHECK(open_new_file(dir.path / "dangling", 0666) == -1);
  CHECK(!fs::exists(elsewhere.path / "created_through_link"));
  CHECK(slurp(elsewhere.path / "victim") == "secret");
  write_text(dir.path / "plain", "x");
  CHECK(open_new_file(dir.path / "plain", 0666) == -1);
  CHECK(slurp(dir.path / "plain") == "x");
}

TEST_CASE("create_temporary_file skips names that exist and cleans up after itself") {
  temp_dir dir("atomic"), elsewhere("atomic_elsewhere");
  write_text(elsewhere.path / "victim", "secret");
  fs::create_symlink(elsewhere.path / "victim", dir.path / "planted");
  fs::path created;
  {
    temporary_file t = create_temporary_file(dir.path, "w.npy", names_in_turn({"planted", "fresh"}));
    created = t.path();
    CHECK(created == dir.path / "fresh");
    CHECK(t.fd.get() >= 0);
    CHECK(fs::is_regular_file(created));
    CHECK(!fs::is_symlink(created));
  }  // not released: removed
  CHECK(!fs::exists(created));
  CHECK(fs::is_symlink(dir.path / "planted"));  // the planted link is not the temporary's to remove
  CHECK(slurp(elsewhere.path / "victim") == "secret");

  // Every name taken: a typed error after a bounded number of tries, nothing created.
  const std::string msg = [&] {
    try {
      (void)create_temporary_file(dir.path, "w.npy", names_in_turn({"planted"}));
    } catch (const io_error& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  CHECK(msg.rfind("w.npy: cannot write: no unused temporary file name", 0) == 0);
  CHECK(dir.entries() == std::vector<std::string>{"planted"});

  // Another failure (the directory is missing) is reported at once, with the reason.
  CHECK_THROWS_WITH_AS((void)create_temporary_file(dir.path / "missing", "w.npy"),
                       doctest::Contains("creating the temporary file"), io_error);
}

TEST_CASE("create_temporary_directory skips names that exist — its guard removes it with its content") {
  temp_dir dir("atomic");
  fs::create_directory(dir.path / "taken");
  fs::path staged;
  {
    temporary_guard g = create_temporary_directory(dir.path, "layer0", names_in_turn({"taken", "fresh"}));
    staged = g.path();
    CHECK(staged == dir.path / "fresh");
    CHECK(fs::is_directory(staged));
    write_text(staged / "Wq.npy", "x");
  }
  CHECK(!fs::exists(staged));
  CHECK(dir.entries() == std::vector<std::string>{"taken"});
  {
    temporary_guard g = create_temporary_directory(dir.path, "layer0");
    staged = g.path();
    g.release();  // committed: kept
  }
  CHECK(fs::is_directory(staged));
  CHECK(staged.filename().string().rfind(".lqer-tmp-", 0) == 0);
  CHECK_THROWS_WITH_AS((void)create_temporary_directory(dir.path / "missing", "layer0"),
                       doctest::Contains("layer0: cannot create a temporary directory"), io_error);
}

TEST_CASE("write_all goes on after a short write") {
  // A non-blocking pipe takes what fits (64 KiB on Linux) and then says
  // EAGAIN: a loop that stopped at the first short write would report
  // success; this one tries again and reports the error.
  std::array<int, 2> fds{};
  REQUIRE(::pipe(fds.data()) == 0);
  unique_fd rd(fds[0]), wr(fds[1]);
  REQUIRE(::fcntl(wr.get(), F_SETFL, O_NONBLOCK) == 0);
  std::vector<std::byte> data(1 << 20);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 7);
  errno = 0;
  CHECK(!write_all(wr.get(), data));
  CHECK(errno == EAGAIN);
  // What went in is the prefix, in order.
  std::vector<std::byte> got(data.size());
  const ::ssize_t n = ::read(rd.get(), got.data(), got.size());
  REQUIRE(n > 0);
  CHECK(std::equal(got.begin(), got.begin() + n, data.begin()));

  // To a regular file everything goes.
  temp_dir dir("atomic");
  const fs::path p = dir.path / "f";
  unique_fd f(open_new_file(p, 0600));
  REQUIRE(f.get() >= 0);
  CHECK(write_all(f.get(), data));
  CHECK(f.close());
  CHECK(fs::file_size(p) == data.size());
}
