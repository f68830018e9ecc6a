// http/embedded.h: the in-memory site the dashboard is served from (ETag, 304, HEAD, 404,
// the security headers on every answer) and the generated table of ui/.
#include "http/embedded.h"

#include <gtest/gtest.h>

#include <string>

namespace kiln::http {
namespace {

namespace bhttp = boost::beast::http;
using Req = bhttp::request<bhttp::string_body>;

constexpr EmbeddedFile kFiles[] = {
    {"index.html", "text/html; charset=utf-8", "\"aa\"", "<!doctype html>"},
    {"app.js", "text/javascript; charset=utf-8", "\"bb\"", "export {};"},
};
constexpr std::pair<std::string_view, std::string_view> kHeaders[] = {{"X-Test", "1"}};
const EmbeddedSite kSite{kFiles, "index.html", "no-cache", kHeaders};

Req get(std::string_view inm = "", bhttp::verb v = bhttp::verb::get) {
  Req r{v, "/ui/", 11};
  if (!inm.empty()) r.set(bhttp::field::if_none_match, inm);
  return r;
}

TEST(Embedded, ServesTheIndexAndFilesWithTypeEtagAndHeaders) {
  auto a = serve_embedded(kSite, get(), "");
  EXPECT_EQ(a.res.result(), bhttp::status::ok);
  EXPECT_EQ(a.res.body(), "<!doctype html>");
  EXPECT_EQ(a.res[bhttp::field::content_type], "text/html; charset=utf-8");
  EXPECT_EQ(a.res[bhttp::field::etag], "\"aa\"");
  EXPECT_EQ(a.res[bhttp::field::cache_control], "no-cache");
  EXPECT_EQ(a.res["X-Test"], "1");
  a = serve_embedded(kSite, get(), "app.js");
  EXPECT_EQ(a.res.body(), "export {};");
  EXPECT_EQ(a.res[bhttp::field::content_type], "text/javascript; charset=utf-8");
}

TEST(Embedded, HeadAnnouncesTheLengthWithoutABody) {
  auto a = serve_embedded(kSite, get("", bhttp::verb::head), "app.js");
  EXPECT_EQ(a.res.result(), bhttp::status::ok);
  EXPECT_TRUE(a.res.body().empty());
  ASSERT_TRUE(a.head_length);
  EXPECT_EQ(*a.head_length, 10u);
}

TEST(Embedded, IfNoneMatchIsA304WithTheHeaders) {
  for (auto inm : {"\"bb\"", "W/\"bb\"", "\"x\", \"bb\"", "*"}) {
    auto a = serve_embedded(kSite, get(inm), "app.js");
    EXPECT_EQ(a.res.result(), bhttp::status::not_modified) << inm;
    EXPECT_TRUE(a.res.body().empty());
    EXPECT_EQ(a.res[bhttp::field::etag], "\"bb\"");
    EXPECT_EQ(a.res["X-Test"], "1");
  }
  EXPECT_EQ(serve_embedded(kSite, get("\"aa\""), "app.js").res.result(), bhttp::status::ok);
  EXPECT_EQ(serve_embedded(kSite, get("\"b\""), "app.js").res.result(), bhttp::status::ok);
}

TEST(Embedded, AnythingElseIsA404WithTheHeaders) {
  for (auto rel : {"nope.js", "../kiln.db", "x/app.js", "app.js/", "%61pp.js", "APP.JS"}) {
    auto a = serve_embedded(kSite, get(), rel);
    EXPECT_EQ(a.res.result(), bhttp::status::not_found) << rel;
    EXPECT_EQ(a.res["X-Test"], "1");
    EXPECT_FALSE(a.head_length);
  }
}

TEST(Embedded, TheDashboardIsEmbeddedUnderItsPolicy) {
  const auto& site = ui_site();
  bool index = false;
  for (const auto& f : site.files) {
    index = index || f.name == "index.html";
    EXPECT_EQ(f.etag.size(), 66u) << f.name;  // quoted SHA-256 hex
    EXPECT_FALSE(f.data.empty()) << f.name;
  }
  EXPECT_TRUE(index);
  auto a = serve_embedded(site, get(), "");
  EXPECT_EQ(a.res["Content-Security-Policy"], kUiContentSecurityPolicy);
  EXPECT_EQ(a.res["X-Content-Type-Options"], "nosniff");
  EXPECT_EQ(a.res["Referrer-Policy"], "no-referrer");
}

}  // namespace
}  // namespace kiln::http
