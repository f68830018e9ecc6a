#include "core/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace kiln {
namespace {

void escape_label_value(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out.push_back(c);
  }
}

std::string format_value(double v) {
  if (std::floor(v) == v && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<long long>(v));
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// A bucket bound as Prometheus clients print it: the shortest text that reads back the same.
std::string format_bound(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// `labels` (rendered, "" or "{...}") with one more label appended.
std::string with_label(const std::string& labels, std::string_view key, const std::string& v) {
  std::string out = labels.empty() ? "{" : labels.substr(0, labels.size() - 1) + ",";
  out += key;
  out += "=\"";
  escape_label_value(out, v);
  out += "\"}";
  return out;
}

}  // namespace

std::string Metrics::render_labels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out.push_back(',');
    first = false;
    out += k;
    out += "=\"";
    escape_label_value(out, v);
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

void Metrics::describe(std::string name, Type type, std::string help) {
  std::lock_guard lock(mu_);
  auto& f = families_[std::move(name)];
  f.type = type;
  f.help = std::move(help);
}

void Metrics::add(std::string_view family, const Labels& labels, double delta) {
  std::string key = render_labels(labels);
  std::lock_guard lock(mu_);
  auto it = families_.find(family);
  if (it == families_.end()) it = families_.emplace(std::string(family), Family{}).first;
  it->second.samples[key] += delta;
}

void Metrics::set(std::string_view family, const Labels& labels, double value) {
  std::string key = render_labels(labels);
  std::lock_guard lock(mu_);
  auto it = families_.find(family);
  if (it == families_.end()) it = families_.emplace(std::string(family), Family{}).first;
  it->second.samples[key] = value;
}

void Metrics::add_collector(Collector c) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(c));
}

void Metrics::describe_histogram(std::string name, std::string help, std::vector<double> buckets) {
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    if (!std::isfinite(buckets[i]) || (i > 0 && !(buckets[i - 1] < buckets[i]))) {
      throw std::invalid_argument("histogram " + name +
                                  ": buckets must be finite and strictly increasing");
    }
  }
  std::lock_guard lock(mu_);
  auto& f = families_[std::move(name)];
  f.type = Type::kHistogram;
  f.help = std::move(help);
  f.buckets = std::move(buckets);
}

void Metrics::observe(std::string_view family, const Labels& labels, double value) {
  if (std::isnan(value)) return;  // no bucket holds it, and it would poison _sum
  std::string key = render_labels(labels);
  std::lock_guard lock(mu_);
  auto it = families_.find(family);
  if (it == families_.end()) {
    it = families_.emplace(std::string(family), Family{}).first;
    it->second.type = Type::kHistogram;
  }
  Family& f = it->second;
  auto& h = f.histograms[key];
  if (h.counts.empty()) h.counts.assign(f.buckets.size() + 1, 0);
  // The first bound >= value: edges are inclusive (le = "less than or equal").
  const auto b = std::lower_bound(f.buckets.begin(), f.buckets.end(), value) - f.buckets.begin();
  ++h.counts[static_cast<std::size_t>(b)];
  h.sum += value;
  ++h.count;
}

Metrics::HistogramValue Metrics::histogram(std::string_view family, const Labels& labels) const {
  std::string key = render_labels(labels);
  std::lock_guard lock(mu_);
  HistogramValue out;
  auto it = families_.find(family);
  if (it == families_.end()) return out;
  auto h = it->second.histograms.find(key);
  if (h == it->second.histograms.end()) return out;
  std::uint64_t acc = 0;
  for (auto c : h->second.counts) out.cumulative.push_back(acc += c);
  out.sum = h->second.sum;
  out.count = h->second.count;
  return out;
}

double Metrics::value(std::string_view family, const Labels& labels) const {
  std::string key = render_labels(labels);
  std::lock_guard lock(mu_);
  auto it = families_.find(family);
  if (it == families_.end()) return 0;
  auto s = it->second.samples.find(key);
  return s == it->second.samples.end() ? 0 : s->second;
}

std::string Metrics::render() const {
  std::vector<Collector> collectors;
  {
    std::lock_guard lock(mu_);
    collectors = collectors_;
  }
  // Collectors run outside the lock: they may query the database.
  std::map<std::string, std::map<std::string, double>, std::less<>> collected;
  for (const auto& c : collectors) {
    for (auto& [family, labels, value] : c()) collected[family][render_labels(labels)] = value;
  }
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name +
           (f.type == Type::kCounter     ? " counter\n"
            : f.type == Type::kHistogram ? " histogram\n"
                                         : " gauge\n");
    for (const auto& [labels, h] : f.histograms) {
      std::uint64_t acc = 0;
      for (std::size_t i = 0; i < h.counts.size(); ++i) {
        acc += h.counts[i];
        const std::string le = i < f.buckets.size() ? format_bound(f.buckets[i]) : "+Inf";
        out += name + "_bucket" + with_label(labels, "le", le) + " " + std::to_string(acc) + "\n";
      }
      out += name + "_sum" + labels + " " + format_value(h.sum) + "\n";
      out += name + "_count" + labels + " " + std::to_string(h.count) + "\n";
    }
    for (const auto& [labels, v] : f.samples) out += name + labels + " " + format_value(v) + "\n";
    if (auto c = collected.find(name); c != collected.end()) {
      for (const auto& [labels, v] : c->second) {
        out += name + labels + " " + format_value(v) + "\n";
      }
    }
  }
  return out;
}

}  // namespace kiln
