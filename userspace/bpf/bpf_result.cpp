#include "bpf_result.h"

#include <cstdlib>
#include <cstring>

namespace meshpath {

std::string BpfError::toString() const {
  return context + ": " + std::strerror(errnum) + " (errno " + std::to_string(errnum) + ", at " +
         where + ")";
}

BpfError bpfError(int errnum, std::string context, std::source_location location) {
  return BpfError{std::abs(errnum), std::move(context),
                  std::string(location.function_name()) + ":" + std::to_string(location.line())};
}

}  // namespace meshpath
