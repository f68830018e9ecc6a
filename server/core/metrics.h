// core/metrics.h — a small Prometheus registry: labelled counters and gauges, text exposition.
//
// Thread-safe: every method may be called from any thread. Families are declared once with
// their type and help text; samples are keyed by their (ordered) label set. Gauges whose value
// lives elsewhere (rows in the database) are produced at scrape time by collectors.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  enum class Type { kCounter, kGauge };
  // A collector appends samples for the families it owns: (family, labels, value).
  using Sample = std::tuple<std::string, Labels, double>;
  using Collector = std::function<std::vector<Sample>()>;

  void describe(std::string name, Type type, std::string help);
  void add(std::string_view family, const Labels& labels, double delta = 1.0);
  void set(std::string_view family, const Labels& labels, double value);
  void add_collector(Collector c);

  // Current value of one sample (0 if absent); for tests and health output.
  double value(std::string_view family, const Labels& labels) const;
  // Prometheus text exposition format 0.0.4.
  std::string render() const;

 private:
  struct Family {
    Type type = Type::kCounter;
    std::string help;
    std::map<std::string, double> samples;  // rendered label set -> value
  };
  static std::string render_labels(const Labels& labels);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
  std::vector<Collector> collectors_;
};

}  // namespace kiln
