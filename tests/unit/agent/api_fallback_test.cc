// The agent's fallback across the kilnd instances of a cluster: a call that gets no answer
// (or a 5xx) goes to the next server at once, and the client stays with the one that works.
#include <gtest/gtest.h>

#include <atomic>

#include "agent/api_client.h"
#include "tests/unit/fake_http_server.h"

namespace kiln::agent {
namespace {

using kiln::testing::FakeHttpServer;

HttpUrl url(const std::string& text) {
  auto u = parse_agent_url(text);
  EXPECT_TRUE(u) << text;
  return *u;
}

FakeHttpServer::Answer plan_answer(const std::string& who) {
  proto::Deployment d;
  d.id = 7;
  d.machine_id = 1;
  d.to_version = {1, "web", "1"};
  d.kind = "assign";
  d.requested_by = "t";
  proto::ImageVersion v;
  v.id = 1;
  v.name = "web";
  v.version = "1";
  v.size_bytes = 1;
  v.sha256 = std::string(64, 'a');
  v.created_by = "t";
  nlohmann::json j = proto::to_json(d);
  j["image"] = proto::to_json(v);
  j["servers"] = {who};
  FakeHttpServer::Answer a;
  a.status = 200;
  a.content_type = "application/json";
  a.body = j.dump();
  return a;
}

TEST(AgentServerFallback, ADeadServerFallsOverToTheNextAndTheClientStaysThere) {
  std::atomic<int> second_calls{0};
  FakeHttpServer second([&](const std::string& path) {
    ++second_calls;
    FakeHttpServer::Answer a;
    a.status = 200;
    a.content_type = "application/json";
    a.body = path == "/api/v1/agent/progress" ? "{}" : "{}";
    return a;
  });
  auto first = std::make_unique<FakeHttpServer>([](const std::string&) {
    FakeHttpServer::Answer a;
    a.status = 200;
    a.body = "{}";
    return a;
  });
  const std::string first_url = first->url();
  ApiClient api({url(first_url), url(second.url())}, "session-token");
  proto::AgentReport progress;
  progress.stage = "writing";
  ASSERT_TRUE(api.report(progress));  // 1 try: the first server answers
  EXPECT_EQ(api.base().url, first_url);
  EXPECT_EQ(second_calls, 0);

  first.reset();  // the instance dies (SIGKILL): its port refuses connections
  // A progress report has a single try: it still lands, on the second server.
  auto st = api.report(progress);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(api.base().url, second.url());
  EXPECT_EQ(second_calls, 1);
  // ... and the client stays with it (no time lost on the dead one).
  ASSERT_TRUE(api.report(progress));
  EXPECT_EQ(second_calls, 2);
  EXPECT_EQ(api.current(), 1u);
  // The session token went along.
  EXPECT_NE(second.seen().back().headers.find("Authorization: Bearer session-token"),
            std::string::npos);
}

TEST(AgentServerFallback, A5xxGoesToTheNextServerButA4xxIsTheAnswer) {
  FakeHttpServer failing([](const std::string&) {
    FakeHttpServer::Answer a;
    a.status = 503;
    a.body = R"({"error":{"code":"unavailable","message":"busy"}})";
    return a;
  });
  FakeHttpServer refusing([](const std::string&) {
    FakeHttpServer::Answer a;
    a.status = 401;
    a.body = R"({"error":{"code":"unauthorized","message":"no"}})";
    return a;
  });
  FakeHttpServer good([](const std::string&) { return plan_answer("http://10.0.0.9:8080"); });
  {
    ApiClient api({url(failing.url()), url(good.url())}, "t");
    auto plan = api.plan();
    ASSERT_TRUE(plan) << plan.error().message;
    EXPECT_EQ(api.base().url, good.url());
    EXPECT_EQ(plan->servers, std::vector<std::string>{"http://10.0.0.9:8080"});
  }
  {
    // A 4xx is kilnd's answer (the same database says the same on every instance).
    ApiClient api({url(refusing.url()), url(good.url())}, "t");
    auto plan = api.plan();
    ASSERT_FALSE(plan);
    EXPECT_EQ(good.seen().size(), 1u);  // only the first block's call
  }
}

TEST(AgentServerFallback, EveryServerDownIsUnavailableAfterBoundedRounds) {
  std::string a_url, b_url;
  {
    FakeHttpServer a([](const std::string&) { return FakeHttpServer::Answer{}; });
    FakeHttpServer b([](const std::string&) { return FakeHttpServer::Answer{}; });
    a_url = a.url();
    b_url = b.url();
  }
  ApiClient api({url(a_url), url(b_url)}, "t");
  auto r = api.call("GET", "/api/v1/agent/deployment", {}, 2);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kUnavailable);
}

TEST(AgentServerFallback, PlanServersAreAddedOnceAndBadOnesReported) {
  ApiClient api(url("http://127.0.0.1:1"), "t");
  auto bad = api.add_servers(
      {"http://10.0.0.2:8080", "http://127.0.0.1:1", "not a url", "http://10.0.0.2:8080"});
  EXPECT_EQ(bad, std::vector<std::string>{"not a url"});
  ASSERT_EQ(api.servers().size(), 2u);
  EXPECT_EQ(api.servers()[1].url, "http://10.0.0.2:8080");
  EXPECT_EQ(api.base().url, "http://127.0.0.1:1");
}

TEST(AgentServerFallback, AnHttpsAgentTakesNoPlainHttpFallback) {
  // The session token must not go out in the clear after the agent reached kilnd over TLS.
  ApiClient api(url("https://127.0.0.1:1"), "t");
  auto bad = api.add_servers({"http://10.0.0.2:8080", "https://10.0.0.3:8443"});
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].find("http://10.0.0.2:8080"), std::string::npos) << bad[0];
  ASSERT_EQ(api.servers().size(), 2u);
  EXPECT_EQ(api.servers()[1].url, "https://10.0.0.3:8443");
}

}  // namespace
}  // namespace kiln::agent
