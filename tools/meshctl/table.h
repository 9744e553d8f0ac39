// table.h — meshctl's human output: aligned text tables (widths from the content, numbers
// right-aligned) and compact units (1.2K new connections, 3.4 MiB).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace meshpath::meshctl {

enum class Align { kLeft, kRight };

struct Column {
  std::string header;
  Align align = Align::kLeft;
};

class Table {
 public:
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  // A row has one cell per column; missing cells print empty.
  void addRow(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  bool empty() const { return rows_.empty(); }
  void print(std::ostream& out, const std::string& indent = "") const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// 999 -> "999", 1234 -> "1.2K", 3400000 -> "3.4M" (SI steps of 1000).
std::string humanCount(uint64_t n);
// 512 -> "512 B", 1536 -> "1.5 KiB" (binary steps of 1024).
std::string humanBytes(uint64_t n);
// part / whole as "33.3%"; "-" when whole is 0.
std::string percent(uint64_t part, uint64_t whole);
// 75 -> "1m15s".
std::string humanDuration(uint64_t seconds);

}  // namespace meshpath::meshctl
