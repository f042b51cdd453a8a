#include "m2n2/interactive/flood_fill.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "m2n2/core/error.hpp"

namespace m2n2 {
namespace {

uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

float float_of(uint32_t b) {
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// A radix heap: a monotone priority queue on 32-bit keys. It needs every push to be
// at least the last pop, which a bottleneck search gives (a path's maximum only
// grows). Keys are the bit patterns of non-negative floats, which order like the
// values. Bucket i > 0 holds keys whose highest bit differing from the last pop is
// bit i-1; a pop from an empty bucket 0 moves the lowest non-empty bucket down.
class RadixHeap {
 public:
  struct Item {
    uint32_t key;
    int32_t value;
  };

  bool empty() const { return size_ == 0; }

  void push(uint32_t key, int32_t value) {
    buckets_[bucket(key)].push_back({key, value});
    ++size_;
  }

  Item pop() {
    if (buckets_[0].empty()) {
      int i = 1;
      while (buckets_[i].empty()) ++i;
      std::vector<Item>& from = buckets_[i];
      uint32_t lowest = from.front().key;
      for (const Item& it : from) lowest = it.key < lowest ? it.key : lowest;
      last_ = lowest;
      for (const Item& it : from) buckets_[bucket(it.key)].push_back(it);
      from.clear();
    }
    const Item it = buckets_[0].back();
    buckets_[0].pop_back();
    --size_;
    return it;
  }

 private:
  int bucket(uint32_t key) const { return key == last_ ? 0 : 32 - __builtin_clz(key ^ last_); }

  std::vector<Item> buckets_[33];
  uint32_t last_ = 0;
  size_t size_ = 0;
};

}  // namespace

cv::Mat minimax_flood_fill(const cv::Mat& h, cv::Point start) {
  CV_Assert(h.type() == CV_32F && h.isContinuous());
  const int H = h.rows, W = h.cols;
  if (start.x < 0 || start.y < 0 || start.x >= W || start.y >= H) throw Error("flood fill: start point outside the map");
  const float* hv = h.ptr<float>();
  const float h0 = hv[static_cast<size_t>(start.y) * W + start.x];
  cv::Mat out(H, W, CV_32F);
  float* ov = out.ptr<float>();
  std::vector<uint8_t> queued(static_cast<size_t>(H) * W, 0);
  // A value is fixed when the pixel is first reached: pops come in non-decreasing
  // order, so the first neighbour to reach it gives the smallest bottleneck. Ties may
  // pop in any order without changing a value.
  RadixHeap heap;
  const int s = start.y * W + start.x;
  queued[s] = 1;
  heap.push(0u, s);
  while (!heap.empty()) {
    const RadixHeap::Item top = heap.pop();
    const uint32_t t = top.key;
    const int idx = top.value;
    ov[idx] = float_of(t);
    const int y = idx / W, x = idx - y * W;
    const int nb[4] = {y > 0 ? idx - W : -1, y + 1 < H ? idx + W : -1, x > 0 ? idx - 1 : -1, x + 1 < W ? idx + 1 : -1};
    for (int n : nb) {
      if (n < 0 || queued[n]) continue;
      queued[n] = 1;
      const float d = std::fabs(hv[n] - h0);
      heap.push(d > float_of(t) ? bits_of(d) : t, n);  // std::max(t, d), NaN included
    }
  }
  return out;
}

}  // namespace m2n2
