// lqer — typed errors. Every bad input reaches the caller as one of these, with
// a sentence that names what was wrong (and, for files, which file).
#pragma once

#include <stdexcept>
#include <string>

namespace lqer {

/// Base of every error lqer throws. Catch this to catch them all.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A shape, stride or buffer size is invalid or does not match another one.
class shape_error : public error {
 public:
  using error::error;
};

/// A value is outside the domain: NaN or ±Inf in data, a rank larger than the
/// matrix, a negative scale, an unknown name.
class value_error : public error {
 public:
  using error::error;
};

/// A file could not be opened, read, written or renamed.
class io_error : public error {
 public:
  using error::error;
};

/// A file's content is malformed: bad magic, truncated header or data, absurd shape.
class parse_error : public error {
 public:
  using error::error;
};

/// A combination that is valid in general but not supported here (a dtype the
/// reader does not handle, a kernel path this CPU lacks).
class unsupported_error : public error {
 public:
  using error::error;
};

/// A system resource could not be obtained: a thread could not be started.
class resource_error : public error {
 public:
  using error::error;
};

/// The caller broke an API contract that lqer can detect: one linear_workspace
/// used by two linear() calls at once.
class usage_error : public error {
 public:
  using error::error;
};

}  // namespace lqer
