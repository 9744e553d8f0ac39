// text_exposition.h — Prometheus' text format (0.0.4) of metric families, written straight into
// a string. prometheus-cpp's TextSerializer writes the same text through an ostream, which was
// most of a scrape's cost at 1,000 endpoints (about 10,000 samples: sentry and locale work per
// field, printf for every number); this writes the same bytes with std::to_chars.
#pragma once

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace meshpath::metrics {

// Appends `families` to `out`: per family "# HELP" (when it has help), "# TYPE", then its
// samples (none for an empty family, as TextSerializer); histograms as
// _count, _sum and cumulative _bucket{le} ending in +Inf, summaries as quantiles, _sum, _count.
void appendTextExposition(std::string& out, const std::vector<prometheus::MetricFamily>& families);

// One label of a sample being written; views, nothing is copied.
struct LabelRef {
  std::string_view name;
  std::string_view value;
};

// Writes the same text family by family and sample by sample, straight from what a scrape
// read: no MetricFamily or ClientMetric in between (MetricsCollector::collectText). A family's
// samples follow its family() call.
class TextWriter {
 public:
  explicit TextWriter(std::string& out) : out_(out) {}

  void family(std::string_view name, std::string_view help, prometheus::MetricType type);
  // A sample of the current family (counter, gauge or untyped).
  void sample(std::initializer_list<LabelRef> labels, double value);
  // A histogram's series (the current family's type is histogram).
  void histogram(std::initializer_list<LabelRef> labels,
                 const prometheus::ClientMetric::Histogram& h);

 private:
  std::string& out_;
  std::string_view name_;
};

}  // namespace meshpath::metrics
