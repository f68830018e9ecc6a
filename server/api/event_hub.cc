#include "api/event_hub.h"

#include <boost/asio/post.hpp>

namespace kiln::api {

void EventHub::notify(std::int64_t last_id) {
  std::lock_guard lock(mu_);
  if (last_id <= last_id_) return;
  last_id_ = last_id;
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (it->cursor < last_id) {
      it->timer->cancel();  // completes the wait early
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
}

void EventHub::wait(std::int64_t cursor, std::chrono::milliseconds timeout,
                    std::function<void()> wake) {
  std::unique_lock lock(mu_);
  if (shut_down_ || last_id_ > cursor || timeout.count() <= 0) {
    lock.unlock();
    boost::asio::post(ioc_, std::move(wake));
    return;
  }
  auto timer = std::make_shared<boost::asio::steady_timer>(ioc_, timeout);
  auto it = waiters_.insert(waiters_.end(), Waiter{cursor, timer});
  (void)it;
  timer->async_wait([this, timer, wake = std::move(wake)](const boost::system::error_code&) {
    {
      std::lock_guard lock(mu_);
      waiters_.remove_if([&](const Waiter& w) { return w.timer == timer; });
    }
    wake();
  });
}

void EventHub::shutdown() {
  std::lock_guard lock(mu_);
  shut_down_ = true;
  for (auto& w : waiters_) w.timer->cancel();
  waiters_.clear();
}

std::size_t EventHub::waiting() const {
  std::lock_guard lock(mu_);
  return waiters_.size();
}

}  // namespace kiln::api

namespace kiln::api {

bool EventHub::is_shut_down() const {
  std::lock_guard lock(mu_);
  return shut_down_;
}

}  // namespace kiln::api
