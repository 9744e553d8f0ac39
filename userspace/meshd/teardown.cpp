// teardown.cpp — see teardown.h.
#include "teardown.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bpf_dataplane.h"
#include "config.h"
#include "host_setup.h"
#include "state_store.h"

namespace meshpath {

namespace {

// Node settings for --teardown: from the config if one is given (only the node section has to
// make sense), the defaults otherwise.
Result<NodeSpec> teardownNode(const std::string& config) {
  if (config.empty()) return NodeSpec{};
  std::ifstream in(config);
  if (!in) return Error{errno, "read " + config, {}};
  std::stringstream text;
  text << in.rdbuf();
  try {
    ConfigDocument doc = parseConfigDocument(text.str());
    return doc.node.value_or(NodeSpec{});
  } catch (const ConfigError& e) {
    return Error{EINVAL, config + ": " + e.what(), {}};
  }
}

bool socketAnswers(const std::string& path) {
  boost::asio::io_context io;
  boost::asio::local::stream_protocol::socket s(io);
  boost::system::error_code ec;
  s.connect(boost::asio::local::stream_protocol::endpoint(path), ec);
  return !ec;
}

}  // namespace

int teardown(const std::string& config) {
  auto node = teardownNode(config);
  if (!node) {
    spdlog::error("{}", node.error().toString());
    return 2;
  }
  std::error_code ec;
  if (socketAnswers(node->apiSocket) ||
      (std::filesystem::exists(node->pinRoot, ec) && !lockPinRoot(node->pinRoot))) {
    spdlog::error(
        "meshd is running (it owns {}); stop it first, or run it with "
        "--detach-on-exit",
        node->pinRoot);
    return 1;
  }
  if (auto r = BpfDataplane::teardown(node->pinRoot); !r) {
    spdlog::error("teardown: {}", r.error().toString());
    return 1;
  }
  if (auto r = StateStore(node->stateFile).remove(); !r) {
    spdlog::error("teardown: {}", r.error().toString());
    return 1;
  }
  spdlog::info("teardown done: XDP detached, pins under {} and {} removed", node->pinRoot,
               node->stateFile);
  return 0;
}

}  // namespace meshpath
