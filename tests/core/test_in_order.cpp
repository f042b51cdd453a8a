// The ordered worker pool behind `segment --jobs` and `eval --jobs`.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/in_order.hpp"

namespace m2n2 {
namespace {

using Publish = std::function<void(int&)>;

// Items 0..n-1; item i publishes parts results i*10+0 … i*10+parts-1, sleeping a little
// first so that later items often finish before earlier ones.
std::vector<int> run(int jobs, int n, int parts, std::vector<int>* workers = nullptr) {
  int taken = 0;
  const std::function<bool(int&)> next = [&](int& item) {
    if (taken == n) return false;
    item = taken++;
    return true;
  };
  std::mutex mu;
  const std::function<void(int&, int, const Publish&)> work = [&](int& item, int w, const Publish& publish) {
    if (workers) {
      std::lock_guard<std::mutex> lk(mu);
      workers->push_back(w);
    }
    for (int p = 0; p < parts; ++p) {
      std::this_thread::sleep_for(std::chrono::microseconds(((item * 7 + p * 3) % 5) * 300));
      int r = item * 10 + p;
      publish(r);
    }
  };
  std::vector<int> out;
  const std::function<void(int&)> emit = [&](int& r) { out.push_back(r); };
  run_in_order_streamed<int, int>(jobs, next, work, emit);
  return out;
}

std::vector<int> expected(int n, int parts) {
  std::vector<int> e;
  for (int i = 0; i < n; ++i)
    for (int p = 0; p < parts; ++p) e.push_back(i * 10 + p);
  return e;
}

TEST(InOrder, ResultsComeInItemOrderWhateverTheJobs) {
  for (int jobs : {1, 2, 3, 8}) {
    std::vector<int> workers;
    EXPECT_EQ(run(jobs, 12, 3, &workers), expected(12, 3)) << "jobs " << jobs;
    for (int w : workers) EXPECT_TRUE(w >= 0 && w < std::max(jobs, 1));
  }
  EXPECT_TRUE(run(4, 0, 3).empty());
}

TEST(InOrder, OneResultPerItem) {
  int taken = 0;
  const std::function<bool(int&)> next = [&](int& item) { return taken < 9 ? (item = taken++, true) : false; };
  const std::function<int(int&, int)> work = [](int& item, int) {
    std::this_thread::sleep_for(std::chrono::microseconds((9 - item) * 200));
    return item * item;
  };
  std::vector<int> out;
  const std::function<void(int&)> emit = [&](int& r) { out.push_back(r); };
  run_in_order<int, int>(3, next, work, emit);
  EXPECT_EQ(out, (std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49, 64}));
}

// The item first in order has each result emitted before `publish` returns: what its
// worker does next (here: look at what was emitted) sees it.
TEST(InOrder, TheFirstItemsResultIsEmittedBeforePublishReturns) {
  std::atomic<int> emitted{0};
  std::atomic<bool> unseen{false};
  int taken = 0;
  const std::function<bool(int&)> next = [&](int& item) { return taken < 1 ? (item = taken++, true) : false; };
  const std::function<void(int&, int, const Publish&)> work = [&](int& item, int, const Publish& publish) {
    for (int p = 0; p < 50; ++p) {
      int r = item + p;
      publish(r);
      if (emitted.load() != p + 1) unseen = true;
    }
  };
  const std::function<void(int&)> emit = [&](int&) { ++emitted; };
  run_in_order_streamed<int, int>(3, next, work, emit);
  EXPECT_EQ(emitted.load(), 50);
  EXPECT_FALSE(unseen.load());
}

// A failing item stops the hand-out; what was published before it (in order) is
// emitted, then its exception comes out.
TEST(InOrder, AFailureComesOutAfterTheResultsBeforeIt) {
  for (int jobs : {1, 3}) {
    int taken = 0;
    const std::function<bool(int&)> next = [&](int& item) { return taken < 20 ? (item = taken++, true) : false; };
    const std::function<void(int&, int, const Publish&)> work = [&](int& item, int, const Publish& publish) {
      int a = item * 10;
      publish(a);
      if (item == 4) throw std::runtime_error("item 4");
      int b = item * 10 + 1;
      publish(b);
    };
    std::vector<int> out;
    const std::function<void(int&)> emit = [&](int& r) { out.push_back(r); };
    EXPECT_THROW((run_in_order_streamed<int, int>(jobs, next, work, emit)), std::runtime_error) << jobs;
    std::vector<int> want = expected(4, 2);
    want.push_back(40);
    EXPECT_EQ(out, want) << "jobs " << jobs;
  }
}

TEST(InOrder, AFailingEmitStopsTheWorkers) {
  int taken = 0;
  const std::function<bool(int&)> next = [&](int& item) { return taken < 1000 ? (item = taken++, true) : false; };
  const std::function<int(int&, int)> work = [](int& item, int) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return item;
  };
  int seen = 0;
  const std::function<void(int&)> emit = [&](int& r) {
    if (r == 5) throw std::runtime_error("disk full");
    ++seen;
  };
  EXPECT_THROW((run_in_order<int, int>(3, next, work, emit)), std::runtime_error);
  EXPECT_EQ(seen, 5);
  EXPECT_LT(taken, 1000);  // the hand-out stopped early
}

// An item that names an earlier one starts only once that one's work has returned (segment
// --jobs: entries with the same image stem write into the same folder). Here item i names
// i-3, and earlier items take longer, so that without the wait item 3 starts on the
// fourth worker while item 0 still runs.
TEST(InOrder, AnItemStartsOnlyAfterTheEarlierItemItNames) {
  for (int jobs : {2, 4}) {
    const int n = 12;
    int taken = 0;
    const std::function<bool(int&)> next = [&](int& item) { return taken < n ? (item = taken++, true) : false; };
    std::vector<long> indices;
    const std::function<long(const int&, long)> after = [&](const int& item, long index) {
      indices.push_back(index);
      EXPECT_EQ(index, item);
      return item >= 3 ? index - 3 : -1L;
    };
    std::atomic<int> clock{0};
    std::vector<int> started(n, -1), finished(n, -1);
    const std::function<int(int&, int)> work = [&](int& item, int) {
      started[static_cast<size_t>(item)] = clock++;
      std::this_thread::sleep_for(std::chrono::microseconds((n - item) * 400));
      finished[static_cast<size_t>(item)] = clock++;
      return item;
    };
    std::vector<int> out;
    const std::function<void(int&)> emit = [&](int& r) { out.push_back(r); };
    run_in_order<int, int>(jobs, next, work, emit, after);
    std::vector<int> want(n);
    for (int i = 0; i < n; ++i) want[static_cast<size_t>(i)] = i;
    EXPECT_EQ(out, want) << "jobs " << jobs;
    EXPECT_EQ(indices, std::vector<long>(want.begin(), want.end())) << "jobs " << jobs;
    for (int i = 3; i < n; ++i)
      EXPECT_GT(started[static_cast<size_t>(i)], finished[static_cast<size_t>(i - 3)]) << "jobs " << jobs << " item " << i;
  }
}

// The wait ends with a failure of the item waited for: the run stops and the waiting item
// is not worked on.
TEST(InOrder, AFailureEndsTheWaitOfTheItemsAfterIt) {
  int taken = 0;
  const std::function<bool(int&)> next = [&](int& item) { return taken < 2 ? (item = taken++, true) : false; };
  const std::function<long(const int&, long)> after = [](const int&, long index) { return index - 1; };
  std::atomic<int> worked{0};
  const std::function<int(int&, int)> work = [&](int& item, int) {
    ++worked;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (item == 0) throw std::runtime_error("item 0");
    return item;
  };
  const std::function<void(int&)> emit = [](int&) {};
  EXPECT_THROW((run_in_order<int, int>(2, next, work, emit, after)), std::runtime_error);
  EXPECT_EQ(worked.load(), 1);
}

TEST(InOrder, AnItemCannotWaitForItselfOrALaterOne) {
  int taken = 0;
  const std::function<bool(int&)> next = [&](int& item) { return taken < 3 ? (item = taken++, true) : false; };
  const std::function<long(const int&, long)> after = [](const int&, long index) { return index; };
  const std::function<int(int&, int)> work = [](int& item, int) { return item; };
  const std::function<void(int&)> emit = [](int&) {};
  EXPECT_THROW((run_in_order<int, int>(2, next, work, emit, after)), std::logic_error);
}

}  // namespace
}  // namespace m2n2
