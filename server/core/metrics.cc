#include "core/metrics.h"

#include <cmath>
#include <cstdio>

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
    out += "# TYPE " + name + (f.type == Type::kCounter ? " counter\n" : " gauge\n");
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
