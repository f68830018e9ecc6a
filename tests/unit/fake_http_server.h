// tests/unit/fake_http_server.h — a tiny HTTP server on 127.0.0.1 for unit tests of HTTP
// clients (the cluster's peer fetch, the agent's server fallback): one request per connection
// (Connection: close), answers from a handler, every request recorded. Destroying it closes the
// port: a server that died.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kiln::testing {

// A tiny HTTP/1.0-style server on 127.0.0.1 (one request per connection) whose answers come
// from `handler`; records every request's path and headers.
class FakeHttpServer {
 public:
  struct Answer {
    unsigned status = 404;
    std::string content_type = "application/octet-stream";
    std::string body;
    int delay_ms = 0;
    bool hang = false;  // never answers (the client's timeout must end it)
  };
  struct Seen {
    std::string path;
    std::string headers;
  };
  using Handler = std::function<Answer(const std::string& path)>;

  explicit FakeHttpServer(Handler h) : handler_(std::move(h)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 64);
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeHttpServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    for (auto& t : workers_) t.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<Seen> seen() {
    std::lock_guard l(mu_);
    return seen_;
  }

 private:
  void loop() {
    while (!stop_) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      workers_.emplace_back([this, c] { serve(c); });
    }
  }
  void serve(int c) {
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
      const auto n = ::read(c, buf, sizeof buf);
      if (n <= 0) break;
      req.append(buf, static_cast<std::size_t>(n));
    }
    // The body too (unread bytes at close would reset the connection under the response).
    if (auto cl = req.find("Content-Length: "); cl != std::string::npos) {
      const std::size_t want = std::stoul(req.substr(cl + 16)) + req.find("\r\n\r\n") + 4;
      while (req.size() < want) {
        const auto n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
      }
    }
    const auto sp1 = req.find(' ');
    const auto sp2 = req.find(' ', sp1 + 1);
    const std::string path = sp1 == std::string::npos ? "" : req.substr(sp1 + 1, sp2 - sp1 - 1);
    {
      std::lock_guard l(mu_);
      seen_.push_back({path, req});
    }
    const Answer a = handler_(path);
    if (a.hang) {
      while (!stop_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      ::close(c);
      return;
    }
    if (a.delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(a.delay_ms));
    std::string res = "HTTP/1.1 " + std::to_string(a.status) +
                      " X\r\nContent-Type: " + a.content_type +
                      "\r\nContent-Length: " + std::to_string(a.body.size()) +
                      "\r\nConnection: close\r\n\r\n" + a.body;
    std::size_t off = 0;
    while (off < res.size()) {
      const auto n = ::write(c, res.data() + off, res.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    ::close(c);
  }

  Handler handler_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::vector<Seen> seen_;
};

}  // namespace kiln::testing
