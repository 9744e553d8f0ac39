// result.h — what the dataplane and the reconcile loop return instead of throwing: a value or an
// Error carrying errno, what was being done, and (optionally) a hint for the operator.
#pragma once

#include <cerrno>
#include <cstring>
#include <source_location>
#include <string>
#include <utility>
#include <variant>

namespace meshpath {

struct Error {
  Error() = default;
  Error(int code, std::string context, std::string hint = {}, std::string where = {})
      : code(code), context(std::move(context)), hint(std::move(hint)), where(std::move(where)) {}

  int code = 0;         // positive errno, 0 when the failure did not come from a system call
  std::string context;  // what was being done: "update mp_services[web]"
  std::string hint;     // what the operator can do about it; may be empty
  std::string where;    // function:line that saw the failure (for logs, not for API answers)

  std::string toString() const {
    if (code == 0) return context;
    return context + ": " + std::strerror(code);
  }
};

// libbpf 1.x returns -errno (and sets errno); raw syscalls return -1 and set errno. Either way
// rc == -1 means errno holds the cause, so both kinds of return can be passed straight in.
inline Error errnoError(int rc, std::string context, std::string hint = {},
                        std::source_location at = std::source_location::current()) {
  int code = rc == -1 ? errno : (rc < 0 ? -rc : rc);
  return Error{code, std::move(context), std::move(hint),
               std::string(at.function_name()) + ":" + std::to_string(at.line())};
}

// A value or an error, like C++23's std::expected (which g++ 12 does not have).
template <typename T, typename E = Error>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like std::expected
  Result(E error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const E& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, E> v_;
};

template <typename E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  Result(E error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const E& error() const { return error_; }

 private:
  E error_{};
  bool ok_ = true;
};

}  // namespace meshpath
