#include "libbpf_logger.h"

#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include <cstdarg>
#include <cstdio>
#include <string>
#include <string_view>

namespace meshpath {
namespace {

spdlog::level::level_enum toSpdlogLevel(libbpf_print_level level) {
  switch (level) {
    case LIBBPF_WARN:
      return spdlog::level::warn;
    case LIBBPF_INFO:
      return spdlog::level::info;
    case LIBBPF_DEBUG:
    default:
      return spdlog::level::debug;
  }
}

int printToSpdlog(libbpf_print_level level, const char* format, va_list args) {
  const auto spdLevel = toSpdlogLevel(level);
  if (!spdlog::should_log(spdLevel)) return 0;
  va_list sizing;
  va_copy(sizing, args);
  const int length = std::vsnprintf(nullptr, 0, format, sizing);
  va_end(sizing);
  if (length <= 0) return 0;
  std::string text(static_cast<size_t>(length) + 1, '\0');
  std::vsnprintf(text.data(), text.size(), format, args);
  text.resize(static_cast<size_t>(length));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  // libbpf's own messages already start with "libbpf: " (its pr_warn/pr_info/pr_debug put it
  // there); only the rest get it here, so every line says it once.
  constexpr std::string_view kPrefix = "libbpf: ";
  if (std::string_view(text).substr(0, kPrefix.size()) == kPrefix) {
    spdlog::log(spdLevel, "{}", text);
  } else {
    spdlog::log(spdLevel, "{}{}", kPrefix, text);
  }
  return length;
}

}  // namespace

void installLibbpfLogger() { libbpf_set_print(printToSpdlog); }

}  // namespace meshpath
