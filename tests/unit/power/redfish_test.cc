// power/redfish: the driver against a scripted BMC (FakeBmc, a Transport with state and fault
// knobs: 412 on stale ETags, an ignored override, 500s, 401, a refused BootSourceOverrideMode,
// malformed JSON, missing AllowableValues), plus the real Beast transport against local sockets
// (a server that never answers; a reply larger than the cap).
#include "power/redfish.h"

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

namespace kiln::power {
namespace {

BmcConfig cfg(std::string driver, std::string address, std::string user, std::string password) {
  BmcConfig c;
  c.driver = std::move(driver);
  c.address = std::move(address);
  c.username = std::move(user);
  c.password = std::move(password);
  return c;
}

using json = nlohmann::json;
constexpr const char* kPassword = "s3cret-pw!";

std::string b64(const std::string& in) {
  static constexpr char kA[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    std::uint32_t v =
        (std::uint8_t(in[i]) << 16) | (std::uint8_t(in[i + 1]) << 8) | std::uint8_t(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out.push_back(kA[(v >> k) & 63]);
  }
  if (in.size() - i == 1) {
    std::uint32_t v = std::uint8_t(in[i]) << 16;
    out += {kA[(v >> 18) & 63], kA[(v >> 12) & 63], '=', '='};
  } else if (in.size() - i == 2) {
    std::uint32_t v = (std::uint8_t(in[i]) << 16) | (std::uint8_t(in[i + 1]) << 8);
    out += {kA[(v >> 18) & 63], kA[(v >> 12) & 63], kA[(v >> 6) & 63], '='};
  }
  return out;
}

std::string header_of(const HttpRequest& r, const std::string& name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return {};
}

// A Redfish service with one (or more) ComputerSystem, in memory.
struct FakeBmc {
  std::string power = "On";
  std::string target = "None", enabled = "Disabled", mode = "UEFI";
  int etag = 1;
  bool sessions = true;           // advertises a SessionService
  bool sessions_refused = false;  // ... that answers 405
  bool require_if_match = false;  // 428 without If-Match
  std::optional<std::vector<std::string>> reset_types =
      std::vector<std::string>{"On", "ForceOff", "GracefulShutdown", "ForceRestart"};
  std::optional<std::vector<std::string>> boot_targets =
      std::vector<std::string>{"None", "Pxe", "Hdd", "Cd"};
  std::string reset_target = "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset";
  int systems = 1;
  // faults
  int errors_500 = 0;  // the next N authenticated requests answer 500
  int stale_412 = 0;   // the next N PATCHes answer 412
  bool ignore_override = false;
  bool reject_mode = false;   // 400 when BootSourceOverrideMode is in the PATCH
  bool power_sticks = false;  // resets accepted, PowerState never changes
  bool malformed_system = false;
  bool reject_reset = false;      // 400 on any reset, with a message quoting the password
  bool text_reset_reply = false;  // 200 "OK" (not JSON) to a reset
  bool action_info = false;       // ResetType values only in an ActionInfo resource
  int lose_reset_replies = 0;     // the next N resets are done, their reply lost (a timeout)
  std::vector<HttpRequest> log;
  std::vector<std::string> resets;
  std::set<std::string> tokens;
  int next_token = 1;

  std::string etag_value() const { return "W/\"" + std::to_string(etag) + "\""; }

  static HttpResponse reply(unsigned status, const json& body = nullptr) {
    HttpResponse r;
    r.status = status;
    if (!body.is_null()) r.body = body.dump();
    return r;
  }
  static HttpResponse error(unsigned status, const std::string& message) {
    return reply(status,
                 {{"error",
                   {{"code", "Base.1.8.GeneralError"},
                    {"message", "A general error has occurred."},
                    {"@Message.ExtendedInfo", {{{"MessageId", "X"}, {"Message", message}}}}}}});
  }

  json system(int id) const {
    json boot = {{"BootSourceOverrideTarget", target},
                 {"BootSourceOverrideEnabled", enabled},
                 {"BootSourceOverrideMode", mode}};
    if (boot_targets) boot["BootSourceOverrideTarget@Redfish.AllowableValues"] = *boot_targets;
    json reset = {{"target", reset_target}};
    if (action_info) {
      reset["@Redfish.ActionInfo"] = "/redfish/v1/Systems/1/ResetActionInfo";
    } else if (reset_types) {
      reset["ResetType@Redfish.AllowableValues"] = *reset_types;
    }
    return {{"@odata.id", "/redfish/v1/Systems/" + std::to_string(id)},
            {"@odata.etag", etag_value()},
            {"Id", std::to_string(id)},
            {"PowerState", power},
            {"Boot", boot},
            {"Actions", {{"#ComputerSystem.Reset", reset}}}};
  }

  HttpResponse handle(const HttpRequest& r) {
    log.push_back(r);
    const std::string sessions_path = "/redfish/v1/SessionService/Sessions";
    if (r.method == "GET" && r.target == "/redfish/v1") {
      json root = {{"@odata.id", "/redfish/v1"},
                   {"Systems", {{"@odata.id", "/redfish/v1/Systems"}}}};
      if (sessions) {
        root["SessionService"] = {{"@odata.id", "/redfish/v1/SessionService"}};
        root["Links"] = {{"Sessions", {{"@odata.id", sessions_path}}}};
      }
      return reply(200, root);
    }
    if (r.method == "POST" && r.target == sessions_path) {
      if (!sessions || sessions_refused) return error(405, "sessions are not supported");
      json c = json::parse(r.body);
      if (c.value("UserName", "") != "admin" || c.value("Password", "") != kPassword) {
        return error(401, "login failed");
      }
      const std::string t = "tok-" + std::to_string(next_token++);
      tokens.insert(t);
      HttpResponse ok = reply(201, {{"@odata.id", sessions_path + "/1"}});
      ok.headers["x-auth-token"] = t;
      ok.headers["location"] = "https://bmc.example" + sessions_path + "/1";
      return ok;
    }
    const bool authed =
        tokens.count(header_of(r, "X-Auth-Token")) ||
        header_of(r, "Authorization") == "Basic " + b64(std::string("admin:") + kPassword);
    if (!authed) return error(401, "unauthorized");
    if (r.method == "DELETE" && r.target == sessions_path + "/1") {
      tokens.erase(header_of(r, "X-Auth-Token"));
      return reply(204);
    }
    if (errors_500 > 0) {
      --errors_500;
      return error(500, "internal error, try later");
    }
    if (r.method == "GET" && r.target == "/redfish/v1/Systems/1/ResetActionInfo") {
      return reply(200,
                   {{"Parameters", {{{"Name", "ResetType"}, {"AllowableValues", *reset_types}}}}});
    }
    if (r.method == "GET" && r.target == "/redfish/v1/Systems") {
      json members = json::array();
      for (int i = 1; i <= systems; ++i) {
        members.push_back({{"@odata.id", "/redfish/v1/Systems/" + std::to_string(i)}});
      }
      return reply(200, {{"Members", members}, {"Members@odata.count", systems}});
    }
    for (int i = 1; i <= systems; ++i) {
      const std::string path = "/redfish/v1/Systems/" + std::to_string(i);
      if (r.target != path) continue;
      if (r.method == "GET") {
        if (malformed_system) {
          HttpResponse bad;
          bad.status = 200;
          bad.body = "{\"PowerState\": On";
          return bad;
        }
        HttpResponse ok = reply(200, system(i));
        ok.headers["etag"] = etag_value();
        return ok;
      }
      if (r.method == "PATCH") {
        if (stale_412 > 0) {
          --stale_412;
          return error(412, "The ETag supplied did not match the ETag required.");
        }
        const std::string im = header_of(r, "If-Match");
        if (im.empty() && require_if_match) return error(428, "If-Match required");
        if (!im.empty() && im != etag_value()) return error(412, "stale ETag");
        json b = json::parse(r.body).at("Boot");
        if (reject_mode && b.contains("BootSourceOverrideMode")) {
          return error(
              400, "The property BootSourceOverrideMode is not in the list of valid properties");
        }
        if (!ignore_override) {
          target = b.value("BootSourceOverrideTarget", target);
          enabled = b.value("BootSourceOverrideEnabled", enabled);
          mode = b.value("BootSourceOverrideMode", mode);
        }
        ++etag;
        return reply(204);
      }
    }
    if (r.method == "POST" && r.target == reset_target) {
      const std::string type = json::parse(r.body).at("ResetType");
      if (reject_reset) return error(400, std::string("bad value for user admin/") + kPassword);
      resets.push_back(type);
      if (power_sticks) return reply(204);
      if (text_reset_reply) {
        power = type == "ForceOff" ? "Off" : "On";
        HttpResponse ok;
        ok.status = 200;
        ok.body = "OK";
        return ok;
      }
      if (type == "On" || type == "ForceOn" || type == "ForceRestart" || type == "PowerCycle") {
        power = "On";
      } else if (type == "ForceOff" || type == "GracefulShutdown") {
        power = "Off";
      } else {
        return error(400, "unsupported ResetType " + type);
      }
      return reply(204);
    }
    return error(404, "no such resource " + r.target);
  }
};

class FakeTransport final : public Transport {
 public:
  explicit FakeTransport(FakeBmc* bmc) : bmc_(bmc) {}
  Result<HttpResponse> send(const HttpRequest& r) override {
    auto res = bmc_->handle(r);
    if (r.method == "POST" && r.target.find("Reset") != std::string::npos &&
        bmc_->lose_reset_replies > 0) {
      --bmc_->lose_reset_replies;
      return make_error(Errc::kUnavailable, "read: timed out after 10000 ms");
    }
    return res;
  }

 private:
  FakeBmc* bmc_;
};

class PowerRedfish : public ::testing::Test {
 protected:
  std::unique_ptr<RedfishDriver> driver(BmcConfig c = {}) {
    c.driver = "redfish";
    c.address = "https://bmc.example";
    c.username = "admin";
    c.password = kPassword;
    c.insecure = true;
    RedfishOptions o;
    o.backoff = std::chrono::milliseconds(0);
    o.poll_interval = std::chrono::milliseconds(0);
    o.poll_attempts = 3;
    return std::make_unique<RedfishDriver>(c, std::make_unique<FakeTransport>(&bmc_), o);
  }
  int count(const std::string& method, const std::string& target = {}) const {
    int n = 0;
    for (const auto& r : bmc_.log) {
      if (r.method == method && (target.empty() || r.target == target)) ++n;
    }
    return n;
  }
  void expect_no_secret(const std::string& text) {
    EXPECT_EQ(text.find(kPassword), std::string::npos) << text;
    EXPECT_EQ(text.find("tok-"), std::string::npos) << text;
  }
  FakeBmc bmc_;
};

TEST_F(PowerRedfish, DiscoversTheSystemUsesASessionAndDeletesIt) {
  {
    auto d = driver();
    auto s = d->status();
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(*s, PowerState::kOn);
    EXPECT_EQ(d->system_path(), "/redfish/v1/Systems/1");
    EXPECT_EQ(d->auth_mode(), "session");
    EXPECT_EQ(bmc_.tokens.size(), 1u);
    for (const auto& r : bmc_.log) {
      EXPECT_EQ(header_of(r, "Authorization"), "");  // never Basic when a session exists
      if (r.target == "/redfish/v1/Systems/1") {
        EXPECT_EQ(header_of(r, "X-Auth-Token"), "tok-1");
      }
    }
  }
  EXPECT_EQ(count("DELETE", "/redfish/v1/SessionService/Sessions/1"), 1);
  EXPECT_TRUE(bmc_.tokens.empty());
}

TEST_F(PowerRedfish, FallsBackToBasicWithoutSessionServiceOrWhenRefused) {
  for (bool refused : {false, true}) {
    bmc_ = FakeBmc{};
    bmc_.sessions = refused;
    bmc_.sessions_refused = refused;
    auto d = driver();
    auto s = d->status();
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(d->auth_mode(), "basic");
    EXPECT_EQ(header_of(bmc_.log.back(), "Authorization"),
              "Basic " + b64(std::string("admin:") + kPassword));
  }
}

TEST_F(PowerRedfish, RefusedCredentialsAreUnauthorizedAndNameNoSecret) {
  for (bool sessions : {true, false}) {
    bmc_ = FakeBmc{};
    bmc_.sessions = sessions;
    BmcConfig c;
    auto d =
        std::make_unique<RedfishDriver>(cfg("redfish", "https://bmc.example", "admin", "wrong-pw"),
                                        std::make_unique<FakeTransport>(&bmc_));
    auto s = d->power(PowerAction::kCycle);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, Errc::kUnauthorized) << s.error().message;
    EXPECT_NE(s.error().message.find("https://bmc.example"), std::string::npos);
    EXPECT_NE(s.error().message.find("'admin'"), std::string::npos) << s.error().message;
    EXPECT_EQ(s.error().message.find("wrong-pw"), std::string::npos);
    EXPECT_TRUE(bmc_.resets.empty());
  }
}

TEST_F(PowerRedfish, CycleChoosesAmongTheAllowedResetTypes) {
  struct Case {
    std::string power;
    std::optional<std::vector<std::string>> allowed;
    std::vector<std::string> resets;
  };
  const std::vector<Case> cases = {
      {"On",
       std::vector<std::string>{"On", "ForceOff", "ForceRestart", "PowerCycle"},
       {"ForceRestart"}},
      {"On", std::vector<std::string>{"On", "ForceOff", "PowerCycle"}, {"PowerCycle"}},
      {"On", std::vector<std::string>{"On", "ForceOff", "GracefulShutdown"}, {"ForceOff", "On"}},
      {"Off", std::vector<std::string>{"On", "ForceOff", "ForceRestart"}, {"On"}},
      {"PoweringOff", std::vector<std::string>{"ForceOn", "ForceOff"}, {"ForceOn"}},
      {"On", std::nullopt, {"ForceRestart"}},  // no AllowableValues: the common set
      {"Off", std::nullopt, {"On"}},
  };
  for (const auto& c : cases) {
    bmc_ = FakeBmc{};
    bmc_.power = c.power;
    bmc_.reset_types = c.allowed;
    auto steps = driver()->power(PowerAction::kCycle);
    ASSERT_TRUE(steps) << steps.error().message;
    EXPECT_EQ(bmc_.resets, c.resets) << c.power;
    EXPECT_EQ(bmc_.power, "On");
    EXPECT_EQ(steps->back().name, "redfish.wait_power");
  }
}

TEST_F(PowerRedfish, ResetTypesFromAnActionInfoResource) {
  bmc_.action_info = true;
  bmc_.reset_types = std::vector<std::string>{"On", "ForceOff", "PowerCycle"};
  ASSERT_TRUE(driver()->power(PowerAction::kCycle));
  EXPECT_EQ(count("GET", "/redfish/v1/Systems/1/ResetActionInfo"), 1);
  EXPECT_EQ(bmc_.resets, std::vector<std::string>{"PowerCycle"});  // not the common ForceRestart
}

TEST_F(PowerRedfish, AResetAnsweredWithTextIsStillAccepted) {
  bmc_.text_reset_reply = true;
  auto r = driver()->power(PowerAction::kCycle);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(bmc_.resets, std::vector<std::string>{"ForceRestart"});
}

TEST_F(PowerRedfish, PostsToTheAdvertisedTargetNotAGuessedUrl) {
  bmc_.reset_target = "/redfish/v1/Systems/1/Actions/Oem/Vendor.Reset";
  auto steps = driver()->power(PowerAction::kOff);
  ASSERT_TRUE(steps) << steps.error().message;
  EXPECT_EQ(count("POST", "/redfish/v1/Systems/1/Actions/Oem/Vendor.Reset"), 1);
  EXPECT_EQ(bmc_.resets, std::vector<std::string>{"ForceOff"});
  ASSERT_EQ(steps->size(), 3u);
  EXPECT_EQ(steps->at(1).detail, "ResetType=ForceOff");
}

TEST_F(PowerRedfish, OnWhenOnAndOffWhenOffResetNothing) {
  auto on = driver()->power(PowerAction::kOn);
  ASSERT_TRUE(on);
  EXPECT_EQ(on->back().detail, "already on");
  bmc_.power = "Off";
  ASSERT_TRUE(driver()->power(PowerAction::kOff));
  ASSERT_TRUE(driver()->power(PowerAction::kSoftOff));
  EXPECT_TRUE(bmc_.resets.empty());
  EXPECT_EQ(count("POST", bmc_.reset_target), 0);
}

TEST_F(PowerRedfish, SoftOffNeedsGracefulShutdown) {
  bmc_.reset_types = std::vector<std::string>{"On", "ForceOff"};
  auto r = driver()->power(PowerAction::kSoftOff);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  EXPECT_NE(r.error().message.find("allows ResetType On, ForceOff"), std::string::npos)
      << r.error().message;
  bmc_.reset_types = std::nullopt;
  ASSERT_TRUE(driver()->power(PowerAction::kSoftOff));
  EXPECT_EQ(bmc_.resets, std::vector<std::string>{"GracefulShutdown"});
}

TEST_F(PowerRedfish, AResetThatDoesNotTakeIsAConflict) {
  bmc_.power_sticks = true;
  auto r = driver()->power(PowerAction::kOff);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  EXPECT_NE(r.error().message.find("still reads on after 3 reads"), std::string::npos)
      << r.error().message;
}

TEST_F(PowerRedfish, FiveHundredsAreRetriedThenReported) {
  BmcConfig c;
  c.retries = 2;
  bmc_.errors_500 = 2;  // discovery's first authenticated request fails twice, then works
  auto d = driver(c);
  auto s = d->status();
  ASSERT_TRUE(s) << s.error().message;

  bmc_ = FakeBmc{};
  bmc_.errors_500 = 100;
  auto d2 = driver(c);
  const auto before = bmc_.log.size();
  auto f = d2->status();
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, Errc::kUnavailable);
  EXPECT_NE(f.error().message.find("HTTP 500 after 3 attempts"), std::string::npos)
      << f.error().message;
  EXPECT_NE(f.error().message.find("internal error, try later"), std::string::npos);
  // root + session login + 3 attempts at the Systems collection
  EXPECT_EQ(bmc_.log.size() - before, 5u);
}

// A reset whose reply is lost may have been done: it is not sent again (a second reset could
// land after the one-time boot override was used).
TEST_F(PowerRedfish, AResetWhoseReplyIsLostIsNotSentTwice) {
  BmcConfig c;
  c.retries = 2;
  bmc_.lose_reset_replies = 1;
  auto d = driver(c);
  auto r = d->power(PowerAction::kCycle);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kUnavailable);
  EXPECT_EQ(bmc_.resets.size(), 1u);
}

TEST_F(PowerRedfish, FourHundredsAreNotRetriedAndQuoteTheBmcWithoutTheSecret) {
  bmc_.reject_reset = true;
  auto r = driver()->power(PowerAction::kCycle);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  EXPECT_EQ(count("POST", bmc_.reset_target), 1);
  EXPECT_NE(r.error().message.find("bad value for user admin/***"), std::string::npos)
      << r.error().message;
  expect_no_secret(r.error().message);
}

TEST_F(PowerRedfish, MalformedJsonIsInternal) {
  bmc_.malformed_system = true;
  auto r = driver()->status();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInternal);
  EXPECT_NE(r.error().message.find("not JSON"), std::string::npos) << r.error().message;
}

TEST_F(PowerRedfish, SeveralSystemsNeedASystemId) {
  bmc_.systems = 2;
  auto r = driver()->status();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  EXPECT_NE(r.error().message.find("/redfish/v1/Systems/1, /redfish/v1/Systems/2"),
            std::string::npos);
  BmcConfig c;
  c.system_id = "2";
  auto d = driver(c);
  ASSERT_TRUE(d->status());
  EXPECT_EQ(d->system_path(), "/redfish/v1/Systems/2");
  c.system_id = "/redfish/v1/Systems/9";
  EXPECT_FALSE(driver(c)->status());
}

TEST_F(PowerRedfish, BootOnceNetworkPatchesWithIfMatchAndReadsBack) {
  auto d = driver();
  auto steps = d->boot_once_network(BootMode::kUefi);
  ASSERT_TRUE(steps) << steps.error().message;
  EXPECT_EQ(bmc_.target, "Pxe");
  EXPECT_EQ(bmc_.enabled, "Once");
  EXPECT_EQ(bmc_.mode, "UEFI");
  ASSERT_EQ(count("PATCH"), 1);
  for (const auto& r : bmc_.log) {
    if (r.method != "PATCH") continue;
    EXPECT_EQ(header_of(r, "If-Match"), "W/\"1\"");
    EXPECT_EQ(
        json::parse(r.body),
        json::parse(
            R"({"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once","BootSourceOverrideMode":"UEFI"}})"));
  }
  ASSERT_EQ(steps->size(), 2u);
  EXPECT_EQ(steps->back().name, "redfish.verify_boot_override");
  bmc_.mode = "UEFI";
  ASSERT_TRUE(d->boot_once_network(BootMode::kLegacy));
  EXPECT_EQ(bmc_.mode, "Legacy");
}

TEST_F(PowerRedfish, StaleEtagIsReReadAndRetried) {
  bmc_.stale_412 = 1;
  auto steps = driver()->boot_once_network(BootMode::kUefi);
  ASSERT_TRUE(steps) << steps.error().message;
  EXPECT_EQ(count("PATCH"), 2);
  EXPECT_EQ(steps->front().attempts, 2);
  EXPECT_EQ(bmc_.target, "Pxe");
}

TEST_F(PowerRedfish, EtagRefusedForeverIsABoundedConflict) {
  BmcConfig c;
  c.retries = 2;
  bmc_.stale_412 = 1000;
  auto r = driver(c)->boot_once_network(BootMode::kUefi);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  EXPECT_EQ(count("PATCH"), 4);  // the first, then retries + 1 fresh ETags
  EXPECT_NE(r.error().message.find("ETag"), std::string::npos);
}

TEST_F(PowerRedfish, MissingIfMatchIsFetchedWhenTheBmcRequiresIt) {
  bmc_.require_if_match = true;
  // Our PATCH carries the ETag read just before, so 428 never happens; a stale one gets 412.
  bmc_.etag = 7;
  ASSERT_TRUE(driver()->boot_once_network(BootMode::kUefi));
  EXPECT_EQ(count("PATCH"), 1);
}

TEST_F(PowerRedfish, IgnoredOverrideIsAConflict) {
  bmc_.ignore_override = true;
  auto r = driver()->boot_once_network(BootMode::kUefi);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  EXPECT_NE(r.error().message.find("the BMC accepted the boot override and did not apply it"),
            std::string::npos);
  EXPECT_NE(r.error().message.find("BootSourceOverrideTarget=None"), std::string::npos)
      << r.error().message;
}

TEST_F(PowerRedfish, RefusedBootSourceOverrideModeIsRetriedWithoutIt) {
  bmc_.reject_mode = true;
  auto steps = driver()->boot_once_network(BootMode::kUefi);
  ASSERT_TRUE(steps) << steps.error().message;
  EXPECT_EQ(count("PATCH"), 2);
  EXPECT_NE(steps->front().detail.find("BootSourceOverrideMode refused"), std::string::npos)
      << steps->front().detail;
  EXPECT_EQ(bmc_.target, "Pxe");
}

TEST_F(PowerRedfish, NoPxeBootSourceIsInvalidAndPatchesNothing) {
  bmc_.boot_targets = std::vector<std::string>{"None", "Hdd"};
  auto r = driver()->boot_once_network(BootMode::kUefi);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  EXPECT_EQ(count("PATCH"), 0);
  bmc_.boot_targets = std::nullopt;  // not advertised: try it
  EXPECT_TRUE(driver()->boot_once_network(BootMode::kUefi));
}

TEST_F(PowerRedfish, ExpiredSessionLogsInAgainOnce) {
  auto d = driver();
  ASSERT_TRUE(d->status());
  bmc_.tokens.clear();  // the BMC rebooted
  auto s = d->status();
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(count("POST", "/redfish/v1/SessionService/Sessions"), 2);
}

TEST_F(PowerRedfish, ConfigChecks) {
  EXPECT_FALSE(check_config(cfg("snmp", "https://x", "u", "p")));
  auto https = check_config(cfg("redfish", "https://10.0.0.5", "u", "p"));
  ASSERT_FALSE(https);
  EXPECT_NE(https.error().message.find("insecure"), std::string::npos);
  BmcConfig ok = cfg("redfish", "https://10.0.0.5", "u", "p");
  ok.insecure = true;
  EXPECT_TRUE(check_config(ok));
  EXPECT_TRUE(make_driver(ok));
  ok.address = "https://10.0.0.5/some/path";
  EXPECT_FALSE(make_driver(ok));
  BmcConfig ca = cfg("redfish", "https://10.0.0.5", "u", "p");
  ca.ca_file = "/nonexistent/ca.pem";
  auto bad_ca = make_driver(ca);
  ASSERT_FALSE(bad_ca);
  EXPECT_NE(bad_ca.error().message.find("/nonexistent/ca.pem"), std::string::npos);
  // Plain http carries the password in clear: only with insecure, explicitly.
  auto plain = make_driver(cfg("redfish", "http://127.0.0.1:8000", "u", "p"));
  ASSERT_FALSE(plain);
  EXPECT_NE(plain.error().message.find("in clear"), std::string::npos);
  BmcConfig lab = cfg("redfish", "http://127.0.0.1:8000", "u", "p");
  lab.insecure = true;
  EXPECT_TRUE(make_driver(lab));
  EXPECT_EQ(parse_power_action("cycle"), PowerAction::kCycle);
  EXPECT_EQ(parse_power_action("soft-off"), PowerAction::kSoftOff);
  EXPECT_FALSE(parse_power_action("reboot"));
}

// --- the real transport ---------------------------------------------------------------------

TEST(PowerRedfishTransport, ASilentBmcTimesOutAndIsRetriedBoundedly) {
  namespace net = boost::asio;
  net::io_context ioc;
  net::ip::tcp::acceptor silent(ioc, {net::ip::make_address("127.0.0.1"), 0});  // never accepts
  BmcConfig c = cfg("redfish", "http://127.0.0.1:" + std::to_string(silent.local_endpoint().port()),
                    "admin", kPassword);
  c.timeout = std::chrono::milliseconds(200);
  c.retries = 1;
  auto t = beast_transport(c);
  ASSERT_TRUE(t);
  RedfishOptions o;
  o.backoff = std::chrono::milliseconds(1);
  RedfishDriver d(c, std::move(*t), o);
  auto s = d.status();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::kUnavailable);
  EXPECT_NE(s.error().message.find("timed out after 200 ms (2 attempts)"), std::string::npos)
      << s.error().message;
  EXPECT_NE(s.error().message.find("redfish.discover"), std::string::npos);
}

// One connection: reads one request, answers `reply` (raw bytes), closes.
class OneShotServer {
 public:
  explicit OneShotServer(std::string reply)
      : acceptor_(ioc_, {boost::asio::ip::make_address("127.0.0.1"), 0}), reply_(std::move(reply)) {
    thread_ = std::thread([this] {
      boost::asio::ip::tcp::socket s(ioc_);
      acceptor_.accept(s);
      boost::beast::flat_buffer buf;
      boost::beast::http::request<boost::beast::http::string_body> req;
      boost::beast::error_code ec;
      boost::beast::http::read(s, buf, req, ec);
      request_ = req;
      boost::asio::write(s, boost::asio::buffer(reply_), ec);
      s.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    });
  }
  ~OneShotServer() { thread_.join(); }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }
  boost::beast::http::request<boost::beast::http::string_body> request_;

 private:
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::string reply_;
  std::thread thread_;
};

TEST(PowerRedfishTransport, ExchangesARequestAndLowerCasesHeaders) {
  OneShotServer server(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: W/\"5\"\r\n"
      "Content-Length: 2\r\nConnection: close\r\n\r\n{}");
  auto t = beast_transport(cfg("redfish", server.url(), "u", "p"));
  ASSERT_TRUE(t);
  auto r = (*t)->send(
      HttpRequest{"PATCH", "/redfish/v1/Systems/1", {{"If-Match", "W/\"4\""}}, "{\"a\":1}"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->header("etag"), "W/\"5\"");
  EXPECT_EQ(r->body, "{}");
  EXPECT_EQ(server.request_.target(), "/redfish/v1/Systems/1");
  EXPECT_EQ(server.request_["If-Match"], "W/\"4\"");
  EXPECT_EQ(server.request_.body(), "{\"a\":1}");
}

TEST(PowerRedfishTransport, ABodyOverTheCapIsRefused) {
  const std::size_t size = kMaxRedfishBody + 1;
  OneShotServer server("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n" +
                       std::string(size, ' '));
  auto t = beast_transport(cfg("redfish", server.url(), "u", "p"));
  ASSERT_TRUE(t);
  auto r = (*t)->send(HttpRequest{"GET", "/redfish/v1", {}, {}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kTooLarge);
}

}  // namespace
}  // namespace kiln::power
