// The server's session pool: preparation on its worker, the memory-bounded
// least-recently-used set that never drops a session in use, failures and shutdown.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include <opencv2/imgproc.hpp>

#include "serve/session_pool.hpp"

using namespace m2n2;
using namespace std::chrono_literals;

namespace {

cv::Mat picture(int shift) {
  cv::Mat rgb(72, 96, CV_8UC3, cv::Scalar(30, 60, 200));
  cv::circle(rgb, cv::Point(30 + shift, 36), 18, cv::Scalar(220, 200, 40), cv::FILLED);
  return rgb;
}

EngineOptions small_engine() {
  EngineOptions o;
  o.source = "default";
  o.grid = 16;
  o.device = Device::Cpu;
  return o;
}

cv::Mat load(const std::string& name) {
  if (name == "bad") throw Error("bad: not an image");
  return picture(name == "a" ? 0 : name == "b" ? 20 : 40);
}

double bytes_of(const nlohmann::json& summary, const std::string& image) {
  for (const auto& s : summary["sessions"])
    if (s["image"] == image && s["state"] == "ready") return s["bytes"].get<double>();
  return 0;
}

}  // namespace

TEST(SessionPool, PreparesOnceAndSegmentsLikeASessionOfItsOwn) {
  Engine engine(small_engine());
  serve::SessionPool pool(engine, load, 0);
  EXPECT_EQ(pool.status("a").state, "idle");
  cv::Mat mask;
  pool.use("a", [&](Session& s) { mask = s.segment({{30, 36, true}}).mask; });
  const auto st = pool.status("a");
  EXPECT_EQ(st.state, "ready");
  EXPECT_GT(st.bytes, 0);
  EXPECT_GT(st.timings.op, 0);
  // The same as a session opened directly on the same engine.
  auto direct = engine.open(picture(0));
  EXPECT_EQ(cv::norm(direct->segment({{30, 36, true}}).mask, mask, cv::NORM_INF), 0);
  EXPECT_EQ(pool.request("a").state, "ready");  // already prepared: nothing queued
}

TEST(SessionPool, EvictsTheLeastRecentlyUsedButNeverOneInUse) {
  Engine engine(small_engine());
  // Measure one session's weight, then allow one and a half.
  double one = 0;
  {
    serve::SessionPool probe(engine, load, 0);
    probe.use("a", [](Session& s) { s.segment({{30, 36, true}}); });
    one = probe.status("a").bytes;
  }
  ASSERT_GT(one, 0);
  serve::SessionPool pool(engine, load, 1.5 * one);
  pool.use("a", [](Session& s) { s.segment({{30, 36, true}}); });
  pool.use("b", [](Session& s) { s.segment({{50, 36, true}}); });
  auto sum = pool.summary();
  EXPECT_EQ(bytes_of(sum, "a"), 0) << sum.dump();  // a: least recently used, dropped for b
  EXPECT_GT(bytes_of(sum, "b"), 0) << sum.dump();
  EXPECT_LE(sum["used"].get<double>(), 1.5 * one + 1);

  // While a request holds "b", preparing "c" may not drop it: both stay, over budget.
  std::mutex m;
  std::condition_variable cv;
  bool holding = false, release = false;
  std::thread holder([&] {
    pool.use("b", [&](Session&) {
      std::unique_lock<std::mutex> lock(m);
      holding = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
    });
  });
  {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return holding; });
  }
  pool.use("c", [](Session& s) { s.segment({{70, 36, true}}); });
  sum = pool.summary();
  EXPECT_GT(bytes_of(sum, "b"), 0) << "a session in use was dropped: " << sum.dump();
  EXPECT_GT(bytes_of(sum, "c"), 0) << sum.dump();
  {
    std::lock_guard<std::mutex> lock(m);
    release = true;
  }
  cv.notify_all();
  holder.join();
  // Released: back within the budget, the one just used kept.
  sum = pool.summary();
  EXPECT_LE(sum["used"].get<double>(), 1.5 * one + 1) << sum.dump();
  EXPECT_GT(bytes_of(sum, "b"), 0) << sum.dump();
  // A dropped image is prepared again when used.
  pool.use("a", [](Session& s) { EXPECT_GT(cv::countNonZero(s.segment({{30, 36, true}}).mask), 0); });
}

TEST(SessionPool, AFailedPreparationIsReportedAndTheWorkerGoesOn) {
  Engine engine(small_engine());
  serve::SessionPool pool(engine, load, 0);
  try {
    pool.use("bad", [](Session&) { FAIL() << "no session for a failed preparation"; });
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad: not an image"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pool.status("bad").state, "failed");
  EXPECT_EQ(pool.status("bad").error, "bad: not an image");
  pool.use("a", [](Session& s) { EXPECT_TRUE(s.prepared()); });
}

TEST(SessionPool, ShutdownWakesWaitingRequests) {
  Engine engine(small_engine());
  auto pool = std::make_unique<serve::SessionPool>(engine, load, 0);
  pool->shutdown();
  EXPECT_THROW(pool->use("a", [](Session&) {}), Error);
  EXPECT_THROW(pool->on_progress("operator", 0.5), Error);  // a preparation in flight stops at its next stage
  pool.reset();  // joins the worker
}
