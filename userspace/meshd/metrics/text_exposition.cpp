// text_exposition.cpp — the text format, byte for byte as prometheus-cpp's TextSerializer writes
// it (tests/unit/meshd/metrics_test.cpp compares the two).
#include "metrics/text_exposition.h"

#include <charconv>
#include <cmath>
#include <iterator>
#include <limits>
#include <string_view>

namespace meshpath::metrics {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

void appendNumber(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "Nan";  // as TextSerializer (Prometheus reads NaN in any case)
  } else if (std::isinf(v)) {
    out += v < 0 ? "-Inf" : "+Inf";
  } else if (!std::signbit(v) && v < 0x1p53 && v == std::floor(v)) {
    // A count: %.16g writes a whole number below 2^53 (16 digits at most) as just its digits.
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof(buf), static_cast<uint64_t>(v));
    out.append(buf, r.ptr);
  } else {
    // As TextSerializer's ostream writes it (precision max_digits10 - 1, i.e. %.16g), so a
    // bucket's le label reads "0.0001" as before, never "1e-04": le is part of a series' name.
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general,
                                 std::numeric_limits<double>::max_digits10 - 1);
    out.append(buf, r.ptr);
  }
}

void appendNumber(std::string& out, uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

// Label values escape backslash, double quote and newline; HELP text backslash and newline.
void appendEscaped(std::string& out, std::string_view text, bool quotes) {
  bool plain = true;  // the usual case: names and addresses have nothing to escape
  for (const char c : text) {
    if (c == '\\' || c == '\n' || (quotes && c == '"')) {
      plain = false;
      break;
    }
  }
  if (plain) {
    out += text;
    return;
  }
  for (const char c : text) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '"':
        out += quotes ? "\\\"" : "\"";
        break;
      default:
        out += c;
    }
  }
}

// name{labels[,extra="value"]} — the start of a sample line, up to the value. `labels`: any
// range of things with a name and a value (ClientMetric::Label, LabelRef).
template <typename Labels>
void appendHead(std::string& out, std::string_view name, const Labels& labels,
                const char* suffix = "", const char* extraName = nullptr, double extraValue = 0) {
  out += name;
  out += suffix;
  if (std::begin(labels) != std::end(labels) || extraName != nullptr) {
    out += '{';
    const char* sep = "";
    for (const auto& l : labels) {
      out += sep;
      out += l.name;
      out += "=\"";
      appendEscaped(out, l.value, true);
      out += '"';
      sep = ",";
    }
    if (extraName != nullptr) {
      out += sep;
      out += extraName;
      out += "=\"";
      appendNumber(out, extraValue);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
}

void appendHead(std::string& out, const MetricFamily& family, const ClientMetric& metric,
                const char* suffix = "", const char* extraName = nullptr, double extraValue = 0) {
  appendHead(out, family.name, metric.label, suffix, extraName, extraValue);
}

// A histogram's _count, _sum and cumulative buckets, ending in +Inf; `tail` ends each line.
template <typename Labels, typename Tail>
void appendHistogram(std::string& out, std::string_view name, const Labels& labels,
                     const ClientMetric::Histogram& h, Tail tail) {
  appendHead(out, name, labels, "_count");
  appendNumber(out, h.sample_count);
  tail();
  appendHead(out, name, labels, "_sum");
  appendNumber(out, h.sample_sum);
  tail();
  double last = -std::numeric_limits<double>::infinity();
  for (const auto& b : h.bucket) {
    appendHead(out, name, labels, "_bucket", "le", b.upper_bound);
    appendNumber(out, b.cumulative_count);
    tail();
    last = b.upper_bound;
  }
  if (last != std::numeric_limits<double>::infinity()) {
    appendHead(out, name, labels, "_bucket", "le", std::numeric_limits<double>::infinity());
    appendNumber(out, h.sample_count);
    tail();
  }
}

void appendFamilyHeader(std::string& out, std::string_view name, std::string_view help,
                        const char* type) {
  if (!help.empty()) {
    out += "# HELP ";
    out += name;
    out += ' ';
    appendEscaped(out, help, false);
    out += '\n';
  }
  out += "# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void appendTail(std::string& out, const ClientMetric& metric) {
  if (metric.timestamp_ms != 0) {
    out += ' ';
    appendNumber(out, static_cast<uint64_t>(metric.timestamp_ms));
  }
  out += '\n';
}

const char* typeName(MetricType type) {
  switch (type) {
    case MetricType::Counter:
      return "counter";
    case MetricType::Gauge:
      return "gauge";
    case MetricType::Summary:
      return "summary";
    case MetricType::Histogram:
      return "histogram";
    case MetricType::Untyped:
      break;
  }
  return "untyped";
}

void appendMetric(std::string& out, const MetricFamily& f, const ClientMetric& m) {
  switch (f.type) {
    case MetricType::Counter:
      appendHead(out, f, m);
      appendNumber(out, m.counter.value);
      appendTail(out, m);
      break;
    case MetricType::Gauge:
      appendHead(out, f, m);
      appendNumber(out, m.gauge.value);
      appendTail(out, m);
      break;
    case MetricType::Untyped:
      appendHead(out, f, m);
      appendNumber(out, m.untyped.value);
      appendTail(out, m);
      break;
    case MetricType::Summary:
      for (const auto& q : m.summary.quantile) {
        appendHead(out, f, m, "", "quantile", q.quantile);
        appendNumber(out, q.value);
        appendTail(out, m);
      }
      appendHead(out, f, m, "_sum");
      appendNumber(out, m.summary.sample_sum);
      appendTail(out, m);
      appendHead(out, f, m, "_count");
      appendNumber(out, m.summary.sample_count);
      appendTail(out, m);
      break;
    case MetricType::Histogram:
      appendHistogram(out, f.name, m.label, m.histogram, [&] { appendTail(out, m); });
      break;
  }
}

}  // namespace

void appendTextExposition(std::string& out, const std::vector<MetricFamily>& families) {
  for (const MetricFamily& f : families) {
    appendFamilyHeader(out, f.name, f.help, typeName(f.type));
    for (const ClientMetric& m : f.metric) appendMetric(out, f, m);
  }
}

void TextWriter::family(std::string_view name, std::string_view help, MetricType type) {
  name_ = name;
  appendFamilyHeader(out_, name, help, typeName(type));
}

void TextWriter::sample(std::initializer_list<LabelRef> labels, double value) {
  appendHead(out_, name_, labels);
  appendNumber(out_, value);
  out_ += '\n';
}

void TextWriter::histogram(std::initializer_list<LabelRef> labels,
                           const ClientMetric::Histogram& h) {
  appendHistogram(out_, name_, labels, h, [this] { out_ += '\n'; });
}

}  // namespace meshpath::metrics
