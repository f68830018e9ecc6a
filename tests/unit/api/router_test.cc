#include "api/router.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "api/event_hub.h"

namespace kiln::api {
namespace {

using V = boost::beast::http::verb;

TEST(Router, MatchesPatternsAndBindsParams) {
  Router<int> r;
  r.add(V::get, "/api/v1/machines", Access::kRead, 1);
  r.add(V::get, "/api/v1/machines/{id}", Access::kRead, 2);
  r.add(V::delete_, "/api/v1/machines/{id}", Access::kAdmin, 3);
  r.add(V::get, "/api/v1/images/{name}/versions/{version}", Access::kRead, 4);

  auto m = r.match(V::get, "/api/v1/machines/52%3A54%3A00%3A00%3A00%3A01");
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.route->fn, 2);
  EXPECT_EQ(m.params.at("id"), "52:54:00:00:00:01");

  m = r.match(V::get, "/api/v1/images/ubuntu/versions/24.04");
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.params.at("name"), "ubuntu");
  EXPECT_EQ(m.params.at("version"), "24.04");

  EXPECT_EQ(r.match(V::get, "/api/v1/machines/").route, r.match(V::get, "/api/v1/machines").route);
}

TEST(Router, DistinguishesUnknownPathFromWrongMethod) {
  Router<int> r;
  r.add(V::get, "/api/v1/machines/{id}", Access::kRead, 1);
  r.add(V::delete_, "/api/v1/machines/{id}", Access::kAdmin, 2);
  auto wrong = r.match(V::post, "/api/v1/machines/7");
  EXPECT_EQ(wrong.route, nullptr);
  EXPECT_EQ(wrong.allow, "GET, DELETE");
  auto none = r.match(V::get, "/api/v1/nothing");
  EXPECT_EQ(none.route, nullptr);
  EXPECT_TRUE(none.allow.empty());
  EXPECT_EQ(r.match(V::get, "/api/v1/machines/%zz").route, nullptr);
}

TEST(EventHub, WakesOnNewerEventsOrTimeout) {
  boost::asio::io_context ioc;
  EventHub hub(ioc, 10);
  int woke_new = 0, woke_timeout = 0, woke_immediately = 0;
  hub.wait(10, std::chrono::seconds(30), [&] { ++woke_new; });
  hub.wait(10, std::chrono::milliseconds(1), [&] { ++woke_timeout; });
  hub.wait(5, std::chrono::seconds(30), [&] { ++woke_immediately; });  // already behind
  EXPECT_EQ(hub.waiting(), 2u);
  ioc.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(woke_timeout, 1);
  EXPECT_EQ(woke_immediately, 1);
  EXPECT_EQ(woke_new, 0);
  hub.notify(11);
  ioc.restart();
  ioc.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(woke_new, 1);
  EXPECT_EQ(hub.waiting(), 0u);
  int woke_shutdown = 0;
  hub.wait(11, std::chrono::seconds(30), [&] { ++woke_shutdown; });
  hub.shutdown();
  ioc.restart();
  ioc.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(woke_shutdown, 1);
}

}  // namespace
}  // namespace kiln::api
