#include "serve/session_pool.hpp"

#include <algorithm>
#include <vector>

namespace m2n2::serve {

nlohmann::json PrepStatus::to_json() const {
  nlohmann::json j = {{"state", state}};
  if (state == "preparing" || state == "queued") {
    j["stage"] = stage;
    j["fraction"] = fraction;
  }
  if (!error.empty()) j["error"] = error;
  if (state == "ready") {
    j["seconds"] = {{"attention", timings.attention}, {"operator", timings.op}, {"table", timings.table}};
    j["bytes"] = bytes;
  }
  return j;
}

SessionPool::SessionPool(Engine& engine, std::function<cv::Mat(const std::string&)> load, double budget_bytes)
    : engine_(engine), load_(std::move(load)), budget_(budget_bytes) {
  worker_ = std::thread([this] { worker(); });
}

SessionPool::~SessionPool() {
  shutdown();
  if (worker_.joinable()) worker_.join();
}

void SessionPool::shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  changed_.notify_all();
}

std::shared_ptr<SessionPool::Entry> SessionPool::entry(const std::string& name) {
  auto& e = entries_[name];
  if (!e) {
    e = std::make_shared<Entry>();
    e->name = name;
  }
  return e;
}

void SessionPool::enqueue(const std::shared_ptr<Entry>& e) {
  const auto& s = e->status.state;
  if (s == "ready" || s == "queued" || s == "preparing") return;
  e->status = PrepStatus{};
  e->status.state = "queued";
  queue_.push_back(e);
  changed_.notify_all();
}

PrepStatus SessionPool::request(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto e = entry(name);
  enqueue(e);
  return e->status;
}

PrepStatus SessionPool::status(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  return it == entries_.end() ? PrepStatus{} : it->second->status;
}

double SessionPool::used_bytes() const {
  double used = 0;
  for (const auto& kv : entries_)
    if (kv.second->session) used += kv.second->status.bytes;
  return used;
}

void SessionPool::evict_for(double incoming, const Entry* keep) {
  if (budget_ <= 0) return;
  while (used_bytes() + incoming > budget_) {
    Entry* oldest = nullptr;
    for (auto& kv : entries_) {
      Entry* e = kv.second.get();
      if (!e->session || e == keep || e->users > 0) continue;
      if (!oldest || e->last_used < oldest->last_used) oldest = e;
    }
    if (!oldest) return;  // everything left is in use: over budget until it is released
    oldest->session.reset();
    oldest->status = PrepStatus{};  // idle: the next use prepares it again
  }
}

void SessionPool::on_progress(const std::string& stage, double fraction) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) throw Error("the server is shutting down");
  if (preparing_) {
    preparing_->status.stage = stage;
    preparing_->status.fraction = fraction;
  }
  changed_.notify_all();
}

void SessionPool::worker() {
  for (;;) {
    std::shared_ptr<Entry> e;
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      e = queue_.front();
      queue_.pop_front();
      e->status.state = "preparing";
      e->status.stage = "image";
      preparing_ = e.get();
      evict_for(last_bytes_, e.get());  // room for one more session of the usual weight
      changed_.notify_all();
    }
    std::unique_ptr<Session> session;
    std::string error;
    try {
      session = engine_.open(load_(e->name), e->name);
      session->prepare();
    } catch (const std::exception& ex) {
      session.reset();
      error = one_line_message(ex);
    }
    std::lock_guard<std::mutex> lock(mu_);
    preparing_ = nullptr;
    if (session) {
      e->status.state = "ready";
      e->status.stage.clear();
      e->status.fraction = 1;
      e->status.timings = session->timings();
      e->status.bytes = session->memory_bytes();
      last_bytes_ = e->status.bytes;
      e->session = std::move(session);
      e->last_used = std::chrono::steady_clock::now();
      evict_for(0, e.get());
    } else {
      e->status.state = "failed";
      e->status.error = error;
    }
    changed_.notify_all();
  }
}

void SessionPool::use(const std::string& name, const std::function<void(Session&)>& fn) {
  std::shared_ptr<Entry> e;
  {
    std::unique_lock<std::mutex> lock(mu_);
    e = entry(name);
    ++e->users;  // not evicted while this request waits or works
    if (e->status.state == "failed" || e->status.state == "idle") enqueue(e);
    changed_.wait(lock, [&] { return stopping_ || e->status.state == "ready" || e->status.state == "failed"; });
    if (stopping_ || e->status.state == "failed") {
      --e->users;
      if (stopping_) throw Error("the server is shutting down");
      throw Error(e->status.error);
    }
    e->last_used = std::chrono::steady_clock::now();
  }
  std::exception_ptr failure;
  {
    std::lock_guard<std::mutex> one(e->use);
    try {
      fn(*e->session);
    } catch (...) {
      failure = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu_);
    e->status.bytes = e->session->memory_bytes();  // cached maps add up
    --e->users;
    evict_for(0, e.get());
    // Still over the budget with the least recently used sessions gone: this session's
    // cached per-click maps go too (they are made again when a click needs them).
    if (budget_ > 0 && used_bytes() > budget_ && e->session->cached_points() > 0) {
      e->session->clear_points();
      e->status.bytes = e->session->memory_bytes();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

nlohmann::json SessionPool::summary() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<const Entry*> all;
  for (const auto& kv : entries_)
    if (kv.second->status.state != "idle") all.push_back(kv.second.get());
  std::sort(all.begin(), all.end(), [](const Entry* a, const Entry* b) { return a->last_used > b->last_used; });
  nlohmann::json list = nlohmann::json::array();
  for (const Entry* e : all) list.push_back({{"image", e->name}, {"state", e->status.state}, {"bytes", e->status.bytes}});
  return {{"budget", budget_}, {"used", used_bytes()}, {"sessions", list}};
}

}  // namespace m2n2::serve
