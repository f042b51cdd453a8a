#include "m2n2/interactive/flood_fill.hpp"

#include <algorithm>
#include <cmath>
#include <queue>
#include <vector>

#include "m2n2/core/error.hpp"

namespace m2n2 {

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
  // order, so the first neighbour to reach it gives the smallest bottleneck.
  using Item = std::pair<double, int32_t>;
  std::vector<Item> storage;
  storage.reserve(static_cast<size_t>(H) * W);
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap(std::greater<Item>(), std::move(storage));
  const int s = start.y * W + start.x;
  queued[s] = 1;
  heap.emplace(0.0, s);
  while (!heap.empty()) {
    const auto [t, idx] = heap.top();
    heap.pop();
    ov[idx] = static_cast<float>(t);
    const int y = idx / W, x = idx - y * W;
    const int nb[4] = {y > 0 ? idx - W : -1, y + 1 < H ? idx + W : -1, x > 0 ? idx - 1 : -1, x + 1 < W ? idx + 1 : -1};
    for (int n : nb) {
      if (n < 0 || queued[n]) continue;
      queued[n] = 1;
      const double d = static_cast<double>(std::fabs(hv[n] - h0));
      heap.emplace(std::max(t, d), n);
    }
  }
  return out;
}

}  // namespace m2n2
