// The server's sessions: one per image, prepared on a worker thread (one at a time, so
// the attention source is never entered twice), kept in a least-recently-used set whose
// weight is bounded by a memory budget, and used by any number of request threads.
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "m2n2/m2n2.hpp"

namespace m2n2::serve {

// The preparation state of one image, as the page and the API report it.
struct PrepStatus {
  std::string state = "idle";  // idle, queued, preparing, ready, failed
  std::string stage;           // the engine's progress stage while preparing
  double fraction = 0;         // share of the preparation done
  std::string error;           // why the last preparation failed
  SessionTimings timings;      // of the last preparation
  double bytes = 0;            // what the ready session holds
  nlohmann::json to_json() const;
};

class SessionPool {
 public:
  // `load` reads an image (RGB) by its name; `budget_bytes` bounds the ready sessions'
  // memory together (0 = no bound). The most recently used session always stays.
  SessionPool(Engine& engine, std::function<cv::Mat(const std::string&)> load, double budget_bytes);
  ~SessionPool();
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;

  // Queues the image's preparation unless it is ready, queued or being prepared.
  PrepStatus request(const std::string& name);
  PrepStatus status(const std::string& name) const;

  // Runs `fn` on the image's prepared session, which it holds alone meanwhile (requests
  // on other images run in parallel). Waits for the preparation, queuing it if needed;
  // throws Error with the preparation's message if it failed, or when shutting down.
  void use(const std::string& name, const std::function<void(Session&)>& fn);

  // The engine's progress callback: reports on the image being prepared. Throws once
  // shutdown began, which ends that preparation at its next stage.
  void on_progress(const std::string& stage, double fraction);

  // {"budget": B, "used": U, "sessions": [{"image", "bytes", "state"} ...]}, most recent first.
  nlohmann::json summary() const;
  // Wakes every waiting request (they fail with "shutting down") and ends the worker
  // after its current preparation.
  void shutdown();

 private:
  struct Entry {
    std::string name;
    PrepStatus status;
    std::unique_ptr<Session> session;
    std::mutex use;  // one request at a time on a session
    int users = 0;   // requests holding or waiting for `use`
    std::chrono::steady_clock::time_point last_used;
  };
  std::shared_ptr<Entry> entry(const std::string& name);  // with mu_ held
  void enqueue(const std::shared_ptr<Entry>& e);           // with mu_ held
  void evict_for(double incoming, const Entry* keep);      // with mu_ held
  double used_bytes() const;                               // with mu_ held
  void worker();

  Engine& engine_;
  std::function<cv::Mat(const std::string&)> load_;
  double budget_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;
  std::deque<std::shared_ptr<Entry>> queue_;
  Entry* preparing_ = nullptr;
  double last_bytes_ = 0;  // the last prepared session's weight: the estimate for the next
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace m2n2::serve
