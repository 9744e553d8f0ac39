#include "table.h"

#include <algorithm>
#include <array>
#include <cstdio>

namespace meshpath::meshctl {

void Table::print(std::ostream& out, const std::string& indent) const {
  std::vector<size_t> width(columns_.size(), 0);
  for (size_t c = 0; c < columns_.size(); ++c) {
    width[c] = columns_[c].header.size();
    for (const auto& row : rows_) {
      if (c < row.size()) width[c] = std::max(width[c], row[c].size());
    }
  }
  auto printLine = [&](auto cellAt) {
    std::string line = indent;
    for (size_t c = 0; c < columns_.size(); ++c) {
      const std::string& cell = cellAt(c);
      std::string pad(width[c] - cell.size(), ' ');
      if (c > 0) line += "  ";
      line += columns_[c].align == Align::kRight ? pad + cell : cell + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << '\n';
  };
  printLine([&](size_t c) -> const std::string& { return columns_[c].header; });
  static const std::string kEmpty;
  for (const auto& row : rows_) {
    printLine([&](size_t c) -> const std::string& { return c < row.size() ? row[c] : kEmpty; });
  }
}

namespace {

std::string scaled(uint64_t n, double step, const std::array<const char*, 6>& units, bool spaced) {
  double v = static_cast<double>(n);
  size_t u = 0;
  while (v >= step && u + 1 < units.size()) {
    v /= step;
    ++u;
  }
  char buf[32];
  const char* sep = spaced ? " " : "";
  if (u == 0) {
    std::snprintf(buf, sizeof(buf), "%llu%s%s", static_cast<unsigned long long>(n), sep, units[0]);
  } else {
    std::snprintf(buf, sizeof(buf), v < 100 ? "%.1f%s%s" : "%.0f%s%s", v, sep, units[u]);
  }
  std::string s = buf;
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

std::string humanCount(uint64_t n) {
  return scaled(n, 1000.0, {"", "K", "M", "G", "T", "P"}, false);
}

std::string humanBytes(uint64_t n) {
  return scaled(n, 1024.0, {"B", "KiB", "MiB", "GiB", "TiB", "PiB"}, true);
}

std::string percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "-";
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%.1f%%",
                100.0 * static_cast<double>(part) / static_cast<double>(whole));
  return buf;
}

std::string humanDuration(uint64_t seconds) {
  uint64_t d = seconds / 86400, h = seconds / 3600 % 24, m = seconds / 60 % 60, s = seconds % 60;
  std::string out;
  if (d) out += std::to_string(d) + "d";
  if (d || h) out += std::to_string(h) + "h";
  if (d || h || m) out += std::to_string(m) + "m";
  out += std::to_string(s) + "s";
  return out;
}

}  // namespace meshpath::meshctl
