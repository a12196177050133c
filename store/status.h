// Status and Result<T>: the only error channel of store/ and lineage/.
// errno is translated to a Status in exactly one place (Status::FromErrno in
// status.cc); fs/ translates back in exactly one place (fs/errno_map.cc).
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace lfs {

class [[nodiscard]] Status {
 public:
  // Frozen numeric values: they appear in logs and --json output.
  enum class Code : int {
    kOk = 0,
    kNotFound = 1,
    kCorruption = 2,
    kIOError = 3,
    kNoSpace = 4,
    kInvalidArgument = 5,
    kAlreadyExists = 6,
    kReadOnly = 7,
    kBusy = 8,
    kNotEmpty = 9,
    kUnsupported = 10,
    kNotADirectory = 11,
    kIsADirectory = 12,
    kPermission = 13,
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status IOError(std::string m) { return Status(Code::kIOError, std::move(m)); }
  static Status NoSpace(std::string m) { return Status(Code::kNoSpace, std::move(m)); }
  static Status InvalidArgument(std::string m) {
    return Status(Code::kInvalidArgument, std::move(m));
  }
  static Status AlreadyExists(std::string m) { return Status(Code::kAlreadyExists, std::move(m)); }
  static Status ReadOnly(std::string m) { return Status(Code::kReadOnly, std::move(m)); }
  static Status Busy(std::string m) { return Status(Code::kBusy, std::move(m)); }
  static Status NotEmpty(std::string m) { return Status(Code::kNotEmpty, std::move(m)); }
  static Status Unsupported(std::string m) { return Status(Code::kUnsupported, std::move(m)); }
  static Status NotADirectory(std::string m) { return Status(Code::kNotADirectory, std::move(m)); }
  static Status IsADirectory(std::string m) { return Status(Code::kIsADirectory, std::move(m)); }
  static Status Permission(std::string m) { return Status(Code::kPermission, std::move(m)); }
  // The one errno -> Status translation of the project.
  static Status FromErrno(int err, const std::string& context);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  std::string ToString() const;
  static const char* CodeName(Code c);

  // Adds context in front of the message, keeping the code.
  Status Annotate(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + msg_);
  }

 private:
  Status(Code c, std::string m) : code_(c), msg_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string msg_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}                        // NOLINT: implicit by design
  Result(Status s) : status_(std::move(s)) { assert(!status_.ok()); }  // NOLINT
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace lfs

#define LFS_CONCAT_INNER(a, b) a##b
#define LFS_CONCAT(a, b) LFS_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when it is not ok.
#define LFS_RETURN_IF_ERROR(expr)      \
  do {                                 \
    ::lfs::Status _lfs_st = (expr);    \
    if (!_lfs_st.ok()) return _lfs_st; \
  } while (0)

#define LFS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

// LFS_ASSIGN_OR_RETURN(auto x, Foo()); declares x from a Result<T>.
#define LFS_ASSIGN_OR_RETURN(lhs, expr) \
  LFS_ASSIGN_OR_RETURN_IMPL(LFS_CONCAT(_lfs_res_, __LINE__), lhs, expr)
