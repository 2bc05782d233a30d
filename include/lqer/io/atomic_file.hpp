// lqer — writing files so that a reader never sees a partial one.
//
// A file is written into a fresh temporary file in the target's directory and
// renamed over the target once every byte is out: rename(2) replaces a name
// in one step, so readers see the old file or the new one. The temporary
// lives in the same directory because rename cannot cross filesystems. The
// `factorize` command stages a whole directory the same way; both take their
// temporary names, their exclusive creation and their cleanup from here.
//
// Temporary names are ".lqer-tmp-<16 hex digits>" (26 bytes), not derived
// from the target's name: any name that is legal for the target (up to
// NAME_MAX, 255 bytes) is legal for the directory, whereas "<name>.tmp.<hex>"
// is not once the name is longer than 233 bytes. The leading dot keeps them
// out of `ls`; the fixed prefix says what a killed process left behind.
//
// Creation is exclusive (O_CREAT | O_EXCL, mkdir): a name that exists — a
// leftover, another writer's temporary, or a symlink planted by someone who
// can write to the directory and guessed the name — is skipped, never opened
// or followed (O_NOFOLLOW says so once more).
//
// POSIX only (open, write, fchmod, fsync, rename), like the rest of the tools.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "lqer/error.hpp"

namespace lqer::io::detail {

// ---------------------------------------------------------------------------
// Temporary names

/// The prefix of every temporary file and directory lqer creates.
inline constexpr std::string_view kTemporaryPrefix = ".lqer-tmp-";

/// Names tried before giving up. With 64 random bits a clash is a leftover
/// or an adversary, not chance; 16 tries end a loop nobody could win.
inline constexpr int kTemporaryAttempts = 16;

/// A random 64-bit hex string for temporary file names: time, a process-wide
/// counter and (when available) std::random_device, so that two writers of
/// the same target — threads or processes — do not pick the same name.
inline std::string random_hex_suffix() {
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t x = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  x ^= (counter.fetch_add(1) + 1) * 0x9e3779b97f4a7c15ull;
  try {
    std::random_device rd;
    x ^= (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  } catch (...) {
    // No entropy source: time and counter still separate this process's writes.
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, x >>= 4) s[static_cast<std::size_t>(i)] = kHex[x & 15];
  return s;
}

/// ".lqer-tmp-<16 hex digits>": the default source of temporary names.
inline std::string random_temporary_name() { return std::string(kTemporaryPrefix) + random_hex_suffix(); }

/// Where a temporary for `target` goes: the target's directory ("." when the
/// path has no directory part).
inline std::filesystem::path temporary_directory_of(const std::filesystem::path& target) {
  return target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
}

/// `err` as text ("No space left on device").
inline std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

// ---------------------------------------------------------------------------
// Ownership and cleanup

/// Removes a temporary file or directory (with its content) on scope exit
/// unless release() was called.
class temporary_guard {
 public:
  temporary_guard() = default;
  explicit temporary_guard(std::filesystem::path p) : path_(std::move(p)) {}
  temporary_guard(const temporary_guard&) = delete;
  temporary_guard& operator=(const temporary_guard&) = delete;
  ~temporary_guard() {
    if (!path_.empty()) {
      std::error_code ec;  // best effort: the error being thrown is the one to report
      std::filesystem::remove_all(path_, ec);
    }
  }
  const std::filesystem::path& path() const noexcept { return path_; }
  void release() noexcept { path_.clear(); }

 private:
  std::filesystem::path path_;
};

/// A file descriptor, closed on destruction unless close() was called.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }
  int get() const noexcept { return fd_; }
  /// Closes now and says whether close(2) succeeded (errno set if not): on
  /// some filesystems (NFS) a write error is only reported here.
  bool close() noexcept { return ::close(std::exchange(fd_, -1)) == 0; }

 private:
  void reset() noexcept {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  }
  int fd_ = -1;
};

// ---------------------------------------------------------------------------
// Exclusive creation

/// open(2) of a file that must not exist yet: O_EXCL fails with EEXIST on any
/// existing name, a symlink included (dangling or not), and O_NOFOLLOW makes
/// "never through a symlink" explicit. -1 with errno on failure. `mode` is
/// filtered by the umask, as for any new file.
inline int open_new_file(const std::filesystem::path& p, ::mode_t mode) noexcept {
  int fd = -1;
  do {
    fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

struct temporary_file {
  temporary_guard guard;  ///< removes the file unless released (declared first: destroyed after fd is closed)
  unique_fd fd;
  const std::filesystem::path& path() const noexcept { return guard.path(); }
};

/// A new empty file (0666 & ~umask) under a fresh temporary name in `dir`;
/// names that exist are skipped. `target` names the file being written, for
/// the error message. `next_name` is the source of names (tests plant files
/// where it points).
inline temporary_file create_temporary_file(const std::filesystem::path& dir, const std::string& target,
                                            const std::function<std::string()>& next_name = random_temporary_name) {
  for (int attempt = 0; attempt < kTemporaryAttempts; ++attempt) {
    const std::filesystem::path p = dir / next_name();
    const int fd = open_new_file(p, 0666);
    if (fd >= 0) return temporary_file{temporary_guard(p), unique_fd(fd)};
    const int err = errno;
    if (err != EEXIST)
      throw io_error(target + ": cannot write: creating the temporary file " + p.string() + " failed: " +
                     errno_text(err) + (err == EACCES || err == EROFS ? " (is the directory writable?)" : ""));
  }
  throw io_error(target + ": cannot write: no unused temporary file name in " + dir.string() + " after " +
                 std::to_string(kTemporaryAttempts) + " tries");
}

/// A new empty directory (0777 & ~umask) under a fresh temporary name in
/// `dir`, removed by the returned guard unless released. `target` names what
/// is being staged, for the error message.
inline temporary_guard create_temporary_directory(
    const std::filesystem::path& dir, const std::string& target,
    const std::function<std::string()>& next_name = random_temporary_name) {
  for (int attempt = 0; attempt < kTemporaryAttempts; ++attempt) {
    std::filesystem::path p = dir / next_name();
    if (::mkdir(p.c_str(), 0777) == 0) return temporary_guard(std::move(p));
    const int err = errno;
    if (err != EEXIST)
      throw io_error(target + ": cannot create a temporary directory in " + dir.string() + ": " + errno_text(err));
  }
  throw io_error(target + ": cannot create a temporary directory in " + dir.string() + ": no unused name after " +
                 std::to_string(kTemporaryAttempts) + " tries");
}

/// Writes all of `bytes` to `fd`: write(2) may write less than asked (a
/// signal, a pipe, a filesystem's own limit) or be interrupted before writing
/// anything (EINTR), and both mean "go on". false with errno set on a real error.
inline bool write_all(int fd, std::span<const std::byte> bytes) noexcept {
  while (!bytes.empty()) {
    const ::ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) {  // no progress and no error: report it rather than spin
      errno = EIO;
      return false;
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return true;
}

// ---------------------------------------------------------------------------
// The atomic write

/// Writes the concatenation of `parts` to `target` atomically: into a fresh
/// temporary file in the target's directory (see the file comment), then
/// renamed over the target. Readers see the old file or the new one, never a
/// partial one; on any failure the temporary file is removed, the target is
/// left as it was, and io_error names the target.
///
///  * Permissions: a new file gets 0666 & ~umask, as any file a program
///    creates; an existing regular file's permission bits (rwx for user,
///    group and others) are kept — a 0600 secret stays 0600. Ownership is
///    not copied: the new file belongs to the writer.
///  * A read-only target (no write bit at all, e.g. 0444) is refused with
///    io_error "... is read-only", by looking at its mode: rename(2) needs
///    only a writable directory, and root passes every permission check, so
///    the kernel would replace it silently.
///  * A symlink target is replaced by the file rather than followed.
///  * Durability: the temporary file is fsync'ed before the rename. Without
///    that, a crash soon after the rename can leave the target empty or
///    partial on filesystems that allocate late (XFS, ext4 without
///    auto_da_alloc), which is the very outcome this function promises
///    against; one fsync per file costs milliseconds, nothing beside the
///    work that produced the file. The directory is not fsync'ed: a power
///    loss may then undo the rename, which leaves the old file — allowed.
///
/// The parts are a span so that a writer with a number of pieces known only at
/// run time (a safetensors file: header, then each tensor's bytes) streams them
/// from where they are instead of concatenating them first.
inline void write_file_atomically(const std::filesystem::path& target,
                                  std::span<const std::span<const std::byte>> parts) {
  namespace fs = std::filesystem;
  const std::string name = target.string();
  std::error_code ec;
  if (!target.has_filename()) throw io_error(name + ": cannot write: the path names a directory, not a file");
  if (fs::is_directory(target, ec)) throw io_error(name + ": cannot write: it is a directory");
  const fs::path dir = temporary_directory_of(target);
  if (!fs::is_directory(dir, ec))
    throw io_error(name + ": cannot write: " + dir.string() + " is not an existing directory");

  // The existing target's mode (lstat: a symlink is replaced, not followed,
  // so its pointee's mode is not the one that matters).
  bool keep_mode = false;
  ::mode_t mode = 0;
  struct ::stat st {};
  if (::lstat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    mode = st.st_mode & (S_IRWXU | S_IRWXG | S_IRWXO);
    if ((mode & (S_IWUSR | S_IWGRP | S_IWOTH)) == 0)
      throw io_error(name + ": cannot write: it is read-only (no write permission in its mode); make it writable " +
                     "(chmod u+w) to replace it");
    keep_mode = true;
  }

  temporary_file tmp = create_temporary_file(dir, name);
  const std::string tmp_name = tmp.path().string();
  // errno is read before the message is built: building it allocates.
  const auto fail = [&](const std::string& what, int err, const char* hint = "") {
    throw io_error(name + ": cannot write: " + what + " " + tmp_name + " failed: " + errno_text(err) + hint);
  };
  for (const auto part : parts)
    if (!write_all(tmp.fd.get(), part)) fail("writing", errno, " (disk full? size limit?)");
  // fchmod, not the open mode: the open mode is filtered by the umask. The
  // bits are set before the rename, so the target is never more open than it was.
  if (keep_mode && ::fchmod(tmp.fd.get(), mode) != 0) fail("setting the mode of", errno);
  if (::fsync(tmp.fd.get()) != 0) fail("fsync of", errno);
  if (!tmp.fd.close()) fail("closing", errno);
  fs::rename(tmp.path(), target, ec);
  if (ec) throw io_error(name + ": cannot write: renaming " + tmp_name + " over it failed: " + ec.message());
  tmp.guard.release();
}

/// write_file_atomically for a fixed list of parts: `{header, data}`.
inline void write_file_atomically(const std::filesystem::path& target,
                                  std::initializer_list<std::span<const std::byte>> parts) {
  write_file_atomically(target, std::span<const std::span<const std::byte>>(parts.begin(), parts.size()));
}

}  // namespace lqer::io::detail
