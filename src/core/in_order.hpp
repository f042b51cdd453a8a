// Private: runs a batch's items on several threads at once and hands their results on
// in the order the items came in (so that output reads as it would with one thread).
// For `segment --jobs` and `eval --jobs`: on a CPU the per-image work alternates between
// stages that wait on memory (Sinkhorn, Markov steps) and serial stages (flood fill,
// scoring, the default source), and two images at once, each with half the threads,
// keep both cores busy.
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace m2n2 {

// `next(item)` fills the next item and returns true, or returns false at the end; it is
// called by one thread at a time and may block (reading stdin). `work(item, worker,
// publish)` runs on worker thread `worker` (0 … jobs-1) and hands its results to
// `publish`, any number of them, as they are made. `emit(result)` runs on the calling
// thread, in item order (an item's results in the order published), as soon as a result
// and everything before it are there: an item's first results need not wait for its
// last, and a thread blocked in `next` does not hold anything up. A result of the item
// first in order is emitted before `publish` returns (a worker that goes on to its next
// result has its earlier one written, as with one thread). With jobs ≤ 1
// everything runs on the calling thread and `publish` is `emit`. An exception from
// `next` or `work` stops the hand-out and is rethrown here once the results published
// before it (in order) are emitted and the workers have stopped.
//
// `after(item, index)`, when given, is called right after `next` has filled item number
// `index` (0, 1, … in hand-out order, under the same lock) and returns the index of an
// earlier item whose work must have returned before this item's work starts, or -1 for
// none: for items that touch the same files. With jobs ≤ 1 items run one after another
// and it is not called.
template <typename Item, typename Result>
void run_in_order_streamed(int jobs, const std::function<bool(Item&)>& next,
                           const std::function<void(Item&, int, const std::function<void(Result&)>&)>& work,
                           const std::function<void(Result&)>& emit,
                           const std::function<long(const Item&, long)>& after = {}) {
  if (jobs <= 1) {
    Item item;
    while (next(item)) work(item, 0, emit);
    return;
  }
  std::mutex input;             // one `next` at a time; guards `handed`, `ended`
  long handed = 0;
  bool ended = false;
  struct Slot {                 // one item's results not yet emitted
    std::deque<Result> results;
    long published = 0, emitted = 0;
    bool complete = false;      // its work has returned
  };
  std::mutex mu;                // guards `slots`, `out`, `running`, `failure`
  std::condition_variable cv;
  std::map<long, Slot> slots;
  long out = 0;                 // the item whose results are emitted now
  int running = jobs;
  std::exception_ptr failure;
  const auto fail = [&](std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (!failure) failure = e;
    }
    cv.notify_all();
    std::lock_guard<std::mutex> lk(input);
    ended = true;
  };
  const auto worker = [&](int w) {
    for (;;) {
      Item item;
      long index = 0, wait_for = -1;
      {
        std::lock_guard<std::mutex> lk(input);
        if (ended) break;
        bool more = false;
        try {
          more = next(item);
          if (more) {
            index = handed++;
            if (after) wait_for = after(item, index);
            if (wait_for >= index) throw std::logic_error("run_in_order: an item may wait only for an earlier one");
          }
        } catch (...) {
          ended = true;
          std::lock_guard<std::mutex> lk2(mu);
          if (!failure) failure = std::current_exception();
          break;
        }
        if (!more) {
          ended = true;
          break;
        }
      }
      if (wait_for >= 0) {  // done: emitted and erased (before `out`), or its work has returned
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] {
          const auto f = slots.find(wait_for);
          return wait_for < out || (f != slots.end() && f->second.complete) || failure;
        });
        if (failure) break;
      }
      const std::function<void(Result&)> publish = [&](Result& r) {
        std::unique_lock<std::mutex> lk(mu);
        Slot& slot = slots[index];
        slot.results.push_back(std::move(r));
        const long mine = ++slot.published;
        cv.notify_all();
        if (index == out) cv.wait(lk, [&] { return slot.emitted >= mine || failure; });
      };
      try {
        work(item, w, publish);
        std::lock_guard<std::mutex> lk(mu);
        slots[index].complete = true;
      } catch (...) {
        fail(std::current_exception());
        break;
      }
      cv.notify_all();
    }
    {
      std::lock_guard<std::mutex> lk(mu);
      --running;
    }
    cv.notify_all();
  };
  std::vector<std::thread> pool;
  for (int w = 0; w < jobs; ++w) pool.emplace_back(worker, w);
  std::unique_lock<std::mutex> lk(mu);
  const auto has_news = [&] {
    const auto f = slots.find(out);
    return f != slots.end() && (!f->second.results.empty() || f->second.complete);
  };
  for (;;) {
    cv.wait(lk, [&] { return has_news() || running == 0; });
    if (!has_news()) break;  // every worker has stopped and nothing more is in order
    Slot& slot = slots[out];
    if (slot.results.empty()) {  // complete, all emitted: on to the next item
      slots.erase(out);
      ++out;
      continue;
    }
    Result r = std::move(slot.results.front());
    slot.results.pop_front();
    lk.unlock();
    try {
      emit(r);
    } catch (...) {
      fail(std::current_exception());
      lk.lock();
      break;
    }
    lk.lock();
    ++slot.emitted;  // `slot` stays: it is erased only here, once complete and emitted
    cv.notify_all();
  }
  lk.unlock();
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

// The same where each item gives one result, `work(item, worker)`'s return value.
template <typename Item, typename Result>
void run_in_order(int jobs, const std::function<bool(Item&)>& next, const std::function<Result(Item&, int)>& work,
                  const std::function<void(Result&)>& emit,
                  const std::function<long(const Item&, long)>& after = {}) {
  const std::function<void(Item&, int, const std::function<void(Result&)>&)> one =
      [&](Item& item, int w, const std::function<void(Result&)>& publish) {
        Result r = work(item, w);
        publish(r);
      };
  run_in_order_streamed<Item, Result>(jobs, next, one, emit, after);
}

}  // namespace m2n2
