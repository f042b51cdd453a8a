// Private: runs a batch's items on several threads at once and hands their results on
// in the order the items came in (so that output reads as it would with one thread).
// For `segment --jobs` and `eval --jobs`: on a CPU the per-image work alternates between
// stages that wait on memory (Sinkhorn, Markov steps) and serial stages (flood fill,
// scoring, the default source), and two images at once, each with half the threads,
// keep both cores busy.
#pragma once
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace m2n2 {

// `next(item)` fills the next item and returns true, or returns false at the end; it is
// called by one thread at a time and may block (reading stdin). `work(item, worker)`
// runs on worker thread `worker` (0 … jobs-1). `emit(result)` runs on the calling
// thread, in item order, as soon as a result and all before it are done; a thread
// blocked in `next` does not hold it up. With jobs ≤ 1 everything runs on the calling
// thread. An exception from `next` or `work` stops the hand-out and is rethrown here
// once the results before it are emitted and the workers have stopped.
template <typename Item, typename Result>
void run_in_order(int jobs, const std::function<bool(Item&)>& next, const std::function<Result(Item&, int)>& work,
                  const std::function<void(Result&)>& emit) {
  if (jobs <= 1) {
    Item item;
    while (next(item)) {
      Result r = work(item, 0);
      emit(r);
    }
    return;
  }
  std::mutex input;             // one `next` at a time; guards `handed`, `ended`
  long handed = 0;
  bool ended = false;
  std::mutex mu;                // guards `ready`, `running`, `failure`
  std::condition_variable cv;
  std::map<long, Result> ready;
  int running = jobs;
  std::exception_ptr failure;
  const auto fail = [&](std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (!failure) failure = e;
    }
    std::lock_guard<std::mutex> lk(input);
    ended = true;
  };
  const auto worker = [&](int w) {
    for (;;) {
      Item item;
      long index = 0;
      {
        std::lock_guard<std::mutex> lk(input);
        if (ended) break;
        bool more = false;
        try {
          more = next(item);
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
        index = handed++;
      }
      try {
        Result r = work(item, w);
        std::lock_guard<std::mutex> lk(mu);
        ready.emplace(index, std::move(r));
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
  long out = 0;
  std::unique_lock<std::mutex> lk(mu);
  for (;;) {
    cv.wait(lk, [&] { return ready.count(out) > 0 || running == 0; });
    const auto f = ready.find(out);
    if (f == ready.end()) break;  // every worker has stopped and nothing more is in order
    Result r = std::move(f->second);
    ready.erase(f);
    ++out;
    lk.unlock();
    try {
      emit(r);
    } catch (...) {
      fail(std::current_exception());
      lk.lock();
      break;
    }
    lk.lock();
  }
  lk.unlock();
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace m2n2
