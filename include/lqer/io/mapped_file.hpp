// lqer — a read-only memory map of a whole file, owned by a move-only object.
//
// Model files are large (a 7B GGUF is 4 GB) and are read mostly once, in
// place: mapping them costs no copy and no allocation, pages come in on first
// touch, and the kernel may share them between processes that map the same
// file. Views (std::span, std::string_view) into bytes() stay valid for as
// long as the mapped_file (or whatever it was moved into) lives: a move
// transfers the mapping without moving the bytes.
//
// One hazard no portable code can guard against: if another process truncates
// the file while it is mapped, touching a page beyond the new end raises
// SIGBUS. Readers validate sizes against the size at open; replace model files
// by renaming a new file over them (as lqer's writers do), never by rewriting
// them in place.
//
// On platforms without <sys/mman.h> the file is read into memory instead: the
// same interface, one copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include "lqer/error.hpp"

#if __has_include(<sys/mman.h>) && __has_include(<sys/stat.h>) && __has_include(<fcntl.h>) && \
    __has_include(<unistd.h>)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#define LQER_HAVE_MMAP 1
#else
#include <fstream>
#include <vector>
#define LQER_HAVE_MMAP 0
#endif

namespace lqer::io {

/// A whole file, mapped read-only. Move-only; unmapped by the destructor.
class mapped_file {
 public:
  mapped_file() = default;
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& o) noexcept { swap(o); }
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      mapped_file gone(std::move(*this));
      swap(o);
    }
    return *this;
  }
  ~mapped_file() { release(); }

  /// Maps `path`. Throws io_error naming the file when it is missing, not a
  /// regular file, cannot be opened, or mapping fails. An empty file maps to an
  /// empty span (mmap cannot map zero bytes).
  static mapped_file open(const std::filesystem::path& path) {
    const std::string name = path.string();
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) throw io_error(name + ": is a directory, not a file");
    mapped_file m;
#if LQER_HAVE_MMAP
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      throw io_error(name + (err == ENOENT
                                 ? std::string(": no such file")
                                 : ": cannot be opened for reading: " + std::generic_category().message(err)));
    }
    // The descriptor is only needed until the mapping exists: close it on every path.
    struct fd_closer {
      int fd;
      ~fd_closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw io_error(name + ": cannot determine the file's size");
    if (!S_ISREG(st.st_mode)) throw io_error(name + ": is not a regular file");
    if (st.st_size < 0 || static_cast<std::uintmax_t>(st.st_size) > std::numeric_limits<std::size_t>::max())
      throw io_error(name + ": is too large to map on this platform");
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0) return m;
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)  // NOLINT(performance-no-int-to-ptr): MAP_FAILED is POSIX's (void*)-1
      throw io_error(name + ": mapping " + std::to_string(size) +
                     " bytes failed: " + std::generic_category().message(errno));
    m.data_ = static_cast<const std::byte*>(p);
    m.size_ = size;
#else
    std::ifstream in(path, std::ios::binary);
    if (!in)
      throw io_error(name + (std::filesystem::exists(path, ec) ? ": cannot be opened for reading" : ": no such file"));
    in.seekg(0, std::ios::end);
    const std::streamoff end = in.tellg();
    in.seekg(0, std::ios::beg);
    if (!in || end < 0) throw io_error(name + ": cannot determine the file's size");
    m.copy_.resize(static_cast<std::size_t>(end));
    if (end > 0 && !in.read(reinterpret_cast<char*>(m.copy_.data()), end)) throw io_error(name + ": reading failed");
    m.data_ = m.copy_.data();
    m.size_ = m.copy_.size();
#endif
    return m;
  }

  /// The file's bytes as they were mapped.
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

 private:
  void swap(mapped_file& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
#if !LQER_HAVE_MMAP
    std::swap(copy_, o.copy_);
#endif
  }
  void release() noexcept {
#if LQER_HAVE_MMAP
    // const_cast: munmap takes void*, the mapping was made read-only.
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
#endif
    data_ = nullptr;
    size_ = 0;
  }

  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
#if !LQER_HAVE_MMAP
  std::vector<std::byte> copy_;
#endif
};

}  // namespace lqer::io
