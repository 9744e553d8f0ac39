// apply_view.cpp — the text of `meshctl apply` (see apply_view.h).
#include "apply_view.h"

#include <algorithm>
#include <sstream>
#include <vector>

namespace meshpath::meshctl {

using nlohmann::json;

namespace {

std::vector<std::string> stringList(const json& body, const char* key) {
  std::vector<std::string> out;
  if (!body.is_object() || !body.contains(key) || !body[key].is_array()) return out;
  for (const auto& n : body[key]) out.push_back(n.is_string() ? n.get<std::string>() : n.dump());
  return out;
}

}  // namespace

std::string applyText(const json& body, const std::string& source) {
  std::ostringstream out;
  const bool dryRun = body.is_object() && body.value("dry_run", false);
  const std::vector<std::string> lines = stringList(body, "lines");
  out << (dryRun ? "dry run of " : "applied ") << source << ": "
      << (lines.empty()
              ? std::string("no changes")
              : std::to_string(lines.size()) + (lines.size() == 1 ? " change" : " changes"))
      << (dryRun ? ", nothing applied" : "") << '\n';
  // "~ PATH: FROM -> TO" lines with their values in one column.
  size_t width = 0;
  for (const std::string& l : lines) {
    if (l.rfind("~ ", 0) == 0 && l.find(": ") != std::string::npos) {
      width = std::max(width, l.find(": ") + 1);
    }
  }
  for (const std::string& l : lines) {
    const size_t colon = l.find(": ");
    if (l.rfind("~ ", 0) == 0 && colon != std::string::npos) {
      out << "  " << l.substr(0, colon + 1) << std::string(width - colon, ' ')
          << l.substr(colon + 2) << '\n';
    } else {
      out << "  " << l << '\n';
    }
  }
  return out.str();
}

std::string applyRefusalDetails(const json& body) {
  std::ostringstream out;
  const std::vector<std::string> problems = stringList(body, "problems");
  if (problems.size() > 1) {
    out << problems.size() << " problems:\n";
    for (const std::string& p : problems) out << "  " << p << '\n';
  }
  if (body.contains("diff") && body["diff"].is_object()) {
    std::vector<std::string> nodeLines;
    for (const auto& c : body["diff"].value("changes", json::array())) {
      const std::string path = c.value("path", "");
      if (path.rfind("node.", 0) != 0) continue;
      nodeLines.push_back("~ " + path + ": " + c.value("from", json()).dump() + " -> " +
                          c.value("to", json()).dump());
    }
    if (!nodeLines.empty()) {
      out << "node fields that differ from the running node (they need a restart):\n";
      for (const std::string& l : nodeLines) out << "  " << l << '\n';
    }
  }
  return out.str();
}

}  // namespace meshpath::meshctl
