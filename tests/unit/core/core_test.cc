#include <gtest/gtest.h>

#include <cmath>
#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/crypto.h"
#include "core/json_writer.h"
#include "core/mac.h"
#include "core/metrics.h"
#include "core/time.h"
#include "core/url.h"

namespace kiln {
namespace {

TEST(Mac, NormalizesAcceptedForms) {
  EXPECT_EQ(normalize_mac("52:54:00:AB:cd:0F"), "52:54:00:ab:cd:0f");
  EXPECT_EQ(normalize_mac("52-54-00-ab-cd-0f"), "52:54:00:ab:cd:0f");
  EXPECT_EQ(normalize_mac("525400abcd0f"), "52:54:00:ab:cd:0f");
  EXPECT_EQ(mac_hyphenated("52:54:00:ab:cd:0f"), "52-54-00-ab-cd-0f");
}

TEST(Mac, RejectsMalformed) {
  for (const char* bad :
       {"", "52:54:00:ab:cd", "52:54:00:ab:cd:0f:11", "52:54:00:ab:cd:0g", "52:54-00:ab:cd:0f",
        "5:254:00:ab:cd:0f", ":52:54:00:ab:cd:0f", "52540:0abcd0f"}) {
    EXPECT_FALSE(normalize_mac(bad).has_value()) << bad;
  }
}

TEST(Time, Rfc3339RoundTrip) {
  EXPECT_EQ(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(1700000000123), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(parse_rfc3339_ms("2023-11-14T22:13:20.123Z"), 1700000000123);
  EXPECT_FALSE(parse_rfc3339_ms("2023-11-14 22:13:20").has_value());
  EXPECT_EQ(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(format_rfc3339_ms(951782400000), "2000-02-29T00:00:00.000Z");  // leap day
  // Agrees with gmtime_r/strftime across a wide range of instants.
  for (std::int64_t t = -2'208'988'800'000; t < 4'102'444'800'000; t += 7'777'777'777) {
    const std::int64_t floor_s = t >= 0 ? t / 1000 : -((-t + 999) / 1000);
    std::time_t secs = static_cast<std::time_t>(floor_s);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    char ms[8];
    std::snprintf(ms, sizeof ms, ".%03dZ", static_cast<int>(t - floor_s * 1000));
    EXPECT_EQ(format_rfc3339_ms(t), std::string(buf) + ms) << t;
    EXPECT_EQ(parse_rfc3339_ms(format_rfc3339_ms(t)), t);
  }
}

TEST(Crypto, Sha256KnownVector) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(random_hex(20).size(), 40u);
  EXPECT_NE(random_hex(16), random_hex(16));
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
}

TEST(Url, PercentDecode) {
  EXPECT_EQ(percent_decode("a%20b%2Fc"), "a b/c");
  EXPECT_EQ(percent_decode("a+b", true), "a b");
  EXPECT_EQ(percent_decode("a+b", false), "a+b");
  EXPECT_FALSE(percent_decode("%2").has_value());
  EXPECT_FALSE(percent_decode("%zz").has_value());
  EXPECT_FALSE(percent_decode("a%00b").has_value());
}

TEST(Url, ParseQuery) {
  auto q = parse_query("selector=rack%3Dr12&limit=5&flag");
  ASSERT_TRUE(q);
  EXPECT_EQ((*q)["selector"], "rack=r12");
  EXPECT_EQ((*q)["limit"], "5");
  EXPECT_EQ((*q)["flag"], "");
  EXPECT_FALSE(parse_query("a=%").has_value());
}

TEST(Metrics, RendersCountersGaugesAndCollectors) {
  Metrics m;
  m.describe("req_total", Metrics::Type::kCounter, "Requests.");
  m.add("req_total", {{"route", "/a"}, {"code", "200"}});
  m.add("req_total", {{"route", "/a"}, {"code", "200"}}, 2);
  m.add("req_total", {{"route", "/b\"x"}, {"code", "404"}});
  m.describe("machines", Metrics::Type::kGauge, "Machines.");
  m.add_collector([] {
    return std::vector<Metrics::Sample>{{"machines", {{"state", "ready"}}, 7}};
  });
  EXPECT_EQ(m.value("req_total", {{"route", "/a"}, {"code", "200"}}), 3);
  const auto text = m.render();
  EXPECT_NE(text.find("# TYPE req_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("req_total{route=\"/a\",code=\"200\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("req_total{route=\"/b\\\"x\",code=\"404\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE machines gauge\nmachines{state=\"ready\"} 7\n"), std::string::npos);
}

TEST(Metrics, HistogramExpositionIsCumulativeWithInclusiveEdges) {
  Metrics m;
  m.describe_histogram("stage_seconds", "Stage durations.", {1, 2.5, 60});
  m.observe("stage_seconds", {{"stage", "imaging"}}, 1);    // on the edge: le="1"
  m.observe("stage_seconds", {{"stage", "imaging"}}, 1.5);  // le="2.5"
  m.observe("stage_seconds", {{"stage", "imaging"}}, 2.5);  // on the edge: le="2.5"
  m.observe("stage_seconds", {{"stage", "imaging"}}, 61);   // only +Inf
  m.observe("stage_seconds", {{"stage", "waiting\"x"}}, 0);
  m.observe("stage_seconds", {{"stage", "imaging"}}, std::nan(""));  // ignored
  EXPECT_EQ(m.render(),
            "# HELP stage_seconds Stage durations.\n"
            "# TYPE stage_seconds histogram\n"
            "stage_seconds_bucket{stage=\"imaging\",le=\"1\"} 1\n"
            "stage_seconds_bucket{stage=\"imaging\",le=\"2.5\"} 3\n"
            "stage_seconds_bucket{stage=\"imaging\",le=\"60\"} 3\n"
            "stage_seconds_bucket{stage=\"imaging\",le=\"+Inf\"} 4\n"
            "stage_seconds_sum{stage=\"imaging\"} 66\n"
            "stage_seconds_count{stage=\"imaging\"} 4\n"
            "stage_seconds_bucket{stage=\"waiting\\\"x\",le=\"1\"} 1\n"
            "stage_seconds_bucket{stage=\"waiting\\\"x\",le=\"2.5\"} 1\n"
            "stage_seconds_bucket{stage=\"waiting\\\"x\",le=\"60\"} 1\n"
            "stage_seconds_bucket{stage=\"waiting\\\"x\",le=\"+Inf\"} 1\n"
            "stage_seconds_sum{stage=\"waiting\\\"x\"} 0\n"
            "stage_seconds_count{stage=\"waiting\\\"x\"} 1\n");
  const auto h = m.histogram("stage_seconds", {{"stage", "imaging"}});
  EXPECT_EQ(h.cumulative, (std::vector<std::uint64_t>{1, 3, 3, 4}));
  EXPECT_EQ(h.count, 4u);
  EXPECT_DOUBLE_EQ(h.sum, 66);
  EXPECT_EQ(m.histogram("stage_seconds", {{"stage", "booting"}}).count, 0u);
}

TEST(Metrics, HistogramWithoutLabelsFractionalBoundsAndBadBuckets) {
  Metrics m;
  m.describe_histogram("lat_seconds", "Latency.", {0.005, 0.25});
  m.observe("lat_seconds", {}, 0.25);
  m.observe("lat_seconds", {}, 0.5);
  EXPECT_EQ(m.render(),
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{le=\"0.005\"} 0\n"
            "lat_seconds_bucket{le=\"0.25\"} 1\n"
            "lat_seconds_bucket{le=\"+Inf\"} 2\n"
            "lat_seconds_sum 0.75\n"
            "lat_seconds_count 2\n");
  EXPECT_THROW(m.describe_histogram("bad", "x", {1, 1}), std::invalid_argument);
  EXPECT_THROW(m.describe_histogram("bad", "x", {2, 1}), std::invalid_argument);
  EXPECT_THROW(m.describe_histogram("bad", "x", {1, INFINITY}), std::invalid_argument);
}

TEST(Metrics, HistogramObservationsFromManyThreadsAllCount) {
  Metrics m;
  m.describe_histogram("h_seconds", "H.", {10});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&m, t] {
      for (int i = 0; i < 1000; ++i) m.observe("h_seconds", {}, t % 2 ? 5 : 20);
    });
  }
  for (auto& th : threads) th.join();
  const auto h = m.histogram("h_seconds", {});
  EXPECT_EQ(h.count, 4000u);
  EXPECT_EQ(h.cumulative, (std::vector<std::uint64_t>{2000, 4000}));
  EXPECT_DOUBLE_EQ(h.sum, 2000 * 5 + 2000 * 20);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

TEST(JsonWriter, StringsRoundTripThroughAJsonParser) {
  for (std::string s : {std::string(""), std::string("plain"), std::string("q\"uo\\te"),
                        std::string("tab\tnl\ncr\rbs\bff\f"), std::string("\x01\x1f end"),
                        std::string("caf\xc3\xa9 \xe2\x9c\x93")}) {
    std::string out;
    json_append_string(out, s);
    auto parsed = nlohmann::json::parse(out);
    EXPECT_EQ(parsed.get<std::string>(), s) << out;
    EXPECT_EQ(out, nlohmann::json(s).dump()) << "same text as nlohmann";
  }
  EXPECT_EQ(json_nesting_depth(R"({"a":[1,{"b":"[[[{{"}],"c":"\"[["})"), 3);
  EXPECT_EQ(json_nesting_depth("42"), 0);
  EXPECT_EQ(json_nesting_depth(std::string(1000, '[')), 1000);
  std::string n;
  json_append_int(n, -9007199254740993);
  EXPECT_EQ(n, "-9007199254740993");
}

}  // namespace
}  // namespace kiln
