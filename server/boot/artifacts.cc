#include "boot/artifacts.h"

#include <algorithm>

namespace kiln::boot {

Result<std::string> normalize_name(std::string_view name) {
  if (name.size() > 1024) return make_error(Errc::kInvalid, "name too long");
  std::string out;
  std::size_t pos = 0;
  while (pos <= name.size()) {
    const std::size_t slash = name.find('/', pos);
    const std::string_view seg =
        name.substr(pos, slash == std::string_view::npos ? name.npos : slash - pos);
    for (const char c : seg) {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f || c == '\\') {
        return make_error(Errc::kInvalid, "invalid characters in name");
      }
    }
    if (seg == "..") return make_error(Errc::kInvalid, "'..' is not allowed in names");
    if (!seg.empty() && seg != ".") {
      if (!out.empty()) out.push_back('/');
      out.append(seg);
    }
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  if (out.empty()) return make_error(Errc::kNotFound, "not found");
  return out;
}

Status Artifacts::add_root(const std::filesystem::path& dir) {
  auto root = FileRoot::open(dir);
  if (!root) return root.error();
  roots_.push_back(std::move(*root));
  return ok_status();
}

void Artifacts::add_generator(std::string prefix, Generator g) {
  generators_.emplace_back(std::move(prefix), std::move(g));
  std::stable_sort(generators_.begin(), generators_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

Result<Artifact> Artifacts::resolve(std::string_view name, const Requester& who) const {
  auto norm = normalize_name(name);
  if (!norm) return norm.error();
  const std::string& n = *norm;
  for (const auto& [prefix, gen] : generators_) {
    if (n.compare(0, prefix.size(), prefix) != 0) continue;
    auto bytes = gen(std::string_view(n).substr(prefix.size()), who);
    if (!bytes) return bytes.error();
    Artifact a;
    a.size = bytes->size();
    a.content = std::make_shared<const std::string>(std::move(*bytes));
    a.name = n;
    return a;
  }
  for (const auto& root : roots_) {
    auto f = root.open_file(n);
    if (!f) {
      if (f.error().code == Errc::kNotFound) continue;
      return f.error();
    }
    Artifact a;
    a.size = f->size;
    a.mtime_s = f->mtime_s;
    a.file = std::move(*f);
    a.name = n;
    return a;
  }
  return make_error(Errc::kNotFound, "not found");
}

}  // namespace kiln::boot
