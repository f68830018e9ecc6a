// core/metrics.h — a small Prometheus registry: labelled counters, gauges and histograms, text
// exposition.
//
// Thread-safe: every method may be called from any thread. Families are declared once with
// their type and help text (histograms with their bucket upper bounds); samples are keyed by
// their (ordered) label set. Gauges whose value lives elsewhere (rows in the database) are
// produced at scrape time by collectors. A collector runs before the exposition is rendered and
// outside the registry's lock, so it may also observe() into histograms (a collector that turns
// new rows of the event log into observations).
//
// Histograms follow Prometheus: `<name>_bucket{le="<bound>"}` counts the observations <= bound
// (cumulative, inclusive edges), `le="+Inf"` equals `<name>_count`, and `<name>_sum` is their
// total.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace kiln {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  enum class Type { kCounter, kGauge, kHistogram };
  // A collector appends samples for the families it owns: (family, labels, value).
  using Sample = std::tuple<std::string, Labels, double>;
  using Collector = std::function<std::vector<Sample>()>;

  void describe(std::string name, Type type, std::string help);
  void add(std::string_view family, const Labels& labels, double delta = 1.0);
  void set(std::string_view family, const Labels& labels, double value);
  void add_collector(Collector c);

  // Declares histogram `name` with `buckets`: finite upper bounds, strictly increasing (+Inf is
  // implied). Throws std::invalid_argument otherwise.
  void describe_histogram(std::string name, std::string help, std::vector<double> buckets);
  // Records one observation. A family not declared as a histogram has only the +Inf bucket.
  void observe(std::string_view family, const Labels& labels, double value);
  struct HistogramValue {
    std::vector<std::uint64_t> cumulative;  // per declared bucket, then +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  // One histogram sample as it is now (empty if absent); for tests.
  HistogramValue histogram(std::string_view family, const Labels& labels) const;

  // Current value of one sample (0 if absent); for tests and health output.
  double value(std::string_view family, const Labels& labels) const;
  // Prometheus text exposition format 0.0.4.
  std::string render() const;

 private:
  struct Histogram {
    std::vector<std::uint64_t> counts;  // per bucket (not cumulative), the last one +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  struct Family {
    Type type = Type::kCounter;
    std::string help;
    std::map<std::string, double> samples;  // rendered label set -> value
    std::vector<double> buckets;            // histograms: finite upper bounds
    std::map<std::string, Histogram> histograms;
  };
  static std::string render_labels(const Labels& labels);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
  std::vector<Collector> collectors_;
};

}  // namespace kiln
