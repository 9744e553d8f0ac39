// bpf_result.h — how BPF operations report failure without exceptions: a BpfError carries the
// errno, what was being done and where; BpfResult<T> holds either a value or that error.
#pragma once

#include <source_location>
#include <string>
#include <utility>
#include <variant>

namespace meshpath {

struct BpfError {
  int errnum = 0;       // positive errno
  std::string context;  // what failed, e.g. "update mp_services"
  std::string where;    // function:line that reported it

  std::string toString()
      const;  // "update mp_services: No such file or directory (errno 2, at f:12)"
};

// errnum may be negative (libbpf's style) or positive; it is stored positive.
BpfError bpfError(int errnum, std::string context,
                  std::source_location location = std::source_location::current());

template <typename T>
class [[nodiscard]] BpfResult {
 public:
  BpfResult(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  BpfResult(BpfError error) : value_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return value_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(value_); }
  const T& value() const& { return std::get<0>(value_); }
  T&& value() && { return std::get<0>(std::move(value_)); }
  T& operator*() & { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const BpfError& error() const { return std::get<1>(value_); }

 private:
  std::variant<T, BpfError> value_;
};

// The result of an operation that has no value but can fail.
using BpfStatus = BpfResult<std::monostate>;
inline BpfStatus bpfOk() { return std::monostate{}; }

}  // namespace meshpath
