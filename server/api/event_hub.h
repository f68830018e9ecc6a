// api/event_hub.h — wakes long-polling clients of /api/v1/events when new events are stored.
//
// Writers call notify(last_event_id) after committing; a waiter registered with a cursor is
// completed as soon as an event newer than its cursor exists, or when its deadline passes, or
// at shutdown. Waiting costs a timer, not a thread. Thread-safe.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>

namespace kiln::api {

class EventHub {
 public:
  EventHub(boost::asio::io_context& ioc, std::int64_t last_id) : ioc_(ioc), last_id_(last_id) {}

  void notify(std::int64_t last_id);
  // Calls `wake` once (on the io_context) when an event with id > cursor exists, after
  // `timeout`, or at shutdown, whichever comes first.
  void wait(std::int64_t cursor, std::chrono::milliseconds timeout, std::function<void()> wake);
  void shutdown();
  std::size_t waiting() const;
  bool is_shut_down() const;

 private:
  struct Waiter {
    std::int64_t cursor;
    std::shared_ptr<boost::asio::steady_timer> timer;
  };
  boost::asio::io_context& ioc_;
  mutable std::mutex mu_;
  std::int64_t last_id_;
  bool shut_down_ = false;
  std::list<Waiter> waiters_;
};

}  // namespace kiln::api
