#include "m2n2/interactive/start_state.hpp"

#include <algorithm>

namespace m2n2 {

std::vector<float> start_state(double x, double y, int H, int W, int h, int w) {
  const double u = static_cast<double>(w - 1) * x / W;
  const double v = static_cast<double>(h - 1) * y / H;
  const int x0 = std::min(std::max(0, static_cast<int>(u)), w - 1);
  const int y0 = std::min(std::max(0, static_cast<int>(v)), h - 1);
  const int x1 = std::min(x0 + 1, w - 1);
  const int y1 = std::min(y0 + 1, h - 1);
  const double fx = u - x0, fy = v - y0;
  std::vector<float> s(static_cast<size_t>(h) * w, 0.0f);
  auto add = [&](int yy, int xx, double val) { s[static_cast<size_t>(yy) * w + xx] += static_cast<float>(val); };
  add(y0, x0, (1 - fx) * (1 - fy));
  add(y0, x1, fx * (1 - fy));
  add(y1, x0, (1 - fx) * fy);
  add(y1, x1, fx * fy);
  const float mx = *std::max_element(s.begin(), s.end());
  if (mx > 0)
    for (auto& e : s) e /= mx;
  return s;
}

}  // namespace m2n2
