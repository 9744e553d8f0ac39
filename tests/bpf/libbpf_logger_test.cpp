// libbpf's messages reach spdlog at their level, saying "libbpf: " once.
#include "libbpf_logger.h"

#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>

namespace meshpath {
namespace {

TEST(LibbpfLogger, MessagesSayLibbpfOnce) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  sink->set_pattern("[%l] %v");
  auto logger = std::make_shared<spdlog::logger>("libbpf-test", sink);
  logger->set_level(spdlog::level::debug);
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  installLibbpfLogger();

  // libbpf warns (through its own pr_warn) that the file cannot be opened.
  bpf_object* obj = bpf_object__open_file("/nonexistent/meshpath-test.bpf.o", nullptr);
  EXPECT_EQ(libbpf_get_error(obj), -ENOENT);
  spdlog::set_default_logger(previous);

  const std::string text = out.str();
  EXPECT_NE(text.find("[warning] libbpf: "), std::string::npos) << text;
  EXPECT_EQ(text.find("libbpf: libbpf:"), std::string::npos) << text;
}

}  // namespace
}  // namespace meshpath
