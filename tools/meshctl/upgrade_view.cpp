#include "upgrade_view.h"

#include <sstream>
#include <vector>

#include "json_fields.h"
#include "table.h"

namespace meshpath::meshctl {

using nlohmann::json;

namespace {

std::string programText(const json& p) {
  const std::string tag = str(p, "tag");
  return "id " + std::to_string(u64(p, "id")) + " (tag " + (tag.empty() ? "?" : tag) + ")";
}

std::string ms(double v) { return fixed(v, v < 1 ? 3 : 1) + " ms"; }

}  // namespace

std::string upgradeText(const json& u) {
  std::ostringstream out;
  const bool complete = u.is_object() && u.value("complete", false);
  const std::string name = str(obj(u, "to"), "name");
  out << (complete ? "upgraded " : "upgrade incomplete: ") << (name.empty() ? "program" : name)
      << ": " << programText(obj(u, "from")) << " -> " << programText(obj(u, "to")) << " in "
      << ms(num(u, "total_ms")) << " (load " << ms(num(u, "load_ms")) << ", switch "
      << ms(num(u, "switch_ms")) << ")\n";
  if (!complete && u.is_object() && u.contains("problem") && u["problem"].is_string()) {
    out << "  " << u["problem"].get<std::string>() << '\n';
  }
  // The ERROR column only when an interface has one: a switch that worked has nothing to say.
  bool anyError = false;
  for (const json& i : arr(u, "interfaces")) {
    anyError = anyError || (i.is_object() && i.contains("error") && i["error"].is_string());
  }
  std::vector<Column> columns = {{"INTERFACE"}, {"SWITCHED"}};
  if (anyError) columns.push_back({"ERROR"});
  Table interfaces(std::move(columns));
  for (const json& i : arr(u, "interfaces")) {
    const bool switched = i.is_object() && i.value("switched", false);
    const std::string error = i.contains("error") && i["error"].is_string() ? str(i, "error") : "";
    interfaces.addRow({str(i, "name"), switched ? "yes" : "no", error});
  }
  if (interfaces.empty()) {
    out << "  no interface attached\n";
  } else {
    interfaces.print(out, "  ");
  }
  Table maps({{"MAP"},
              {"LAYOUT"},
              {"COPIED", Align::kRight},
              {"CHANGED", Align::kRight},
              {"COPY", Align::kRight},
              {"DELTA", Align::kRight}});
  for (const json& m : arr(u, "migrations")) {
    maps.addRow(
        {str(m, "map"),
         std::to_string(u64(m, "from_version")) + " -> " + std::to_string(u64(m, "to_version")),
         std::to_string(u64(m, "copied")), std::to_string(u64(m, "changed")), ms(num(m, "copy_ms")),
         ms(num(m, "delta_ms"))});
  }
  if (maps.empty()) {
    out << "  maps kept as they were (no layout changed)\n";
  } else {
    out << "  maps migrated:\n";
    maps.print(out, "  ");
  }
  return out.str();
}

}  // namespace meshpath::meshctl
