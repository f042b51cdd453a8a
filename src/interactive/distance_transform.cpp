#include "m2n2/interactive/distance_transform.hpp"

#include <limits>

namespace m2n2 {

namespace {
constexpr int64_t kInf = std::numeric_limits<int64_t>::max() / 4;

// 1-D squared distance transform of f (lower envelope of parabolas).
void edt_1d(const int64_t* f, int64_t* d, int n, std::vector<int>& v, std::vector<double>& z) {
  int k = 0;
  v[0] = 0;
  z[0] = -std::numeric_limits<double>::infinity();
  z[1] = std::numeric_limits<double>::infinity();
  // Skip leading infinite entries: parabolas at infinity never win.
  int first = 0;
  while (first < n && f[first] >= kInf) ++first;
  if (first == n) {
    for (int q = 0; q < n; ++q) d[q] = kInf;
    return;
  }
  v[0] = first;
  for (int q = first + 1; q < n; ++q) {
    if (f[q] >= kInf) continue;
    double s;
    while (true) {  // z[0] = -inf, so k never drops below 0
      const int p = v[k];
      s = (static_cast<double>(f[q] + static_cast<int64_t>(q) * q) -
           static_cast<double>(f[p] + static_cast<int64_t>(p) * p)) /
          (2.0 * (q - p));
      if (s <= z[k]) --k;
      else break;
    }
    ++k;
    v[k] = q;
    z[k] = s;
    z[k + 1] = std::numeric_limits<double>::infinity();
  }
  k = 0;
  for (int q = 0; q < n; ++q) {
    while (z[k + 1] < q) ++k;
    const int64_t dq = static_cast<int64_t>(q - v[k]);
    d[q] = dq * dq + f[v[k]];
  }
}
}  // namespace

std::vector<int64_t> squared_edt(const cv::Mat& mask) {
  CV_Assert(mask.type() == CV_8U);
  const int H = mask.rows, W = mask.cols;
  std::vector<int64_t> g(static_cast<size_t>(H) * W);
  const int n = std::max(H, W);
  std::vector<int64_t> f(n), d(n);
  std::vector<int> v(n + 1);
  std::vector<double> z(n + 2);
  // Columns first.
  for (int x = 0; x < W; ++x) {
    for (int y = 0; y < H; ++y) f[y] = mask.at<uint8_t>(y, x) ? kInf : 0;
    edt_1d(f.data(), d.data(), H, v, z);
    for (int y = 0; y < H; ++y) g[static_cast<size_t>(y) * W + x] = d[y];
  }
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) f[x] = g[static_cast<size_t>(y) * W + x];
    edt_1d(f.data(), d.data(), W, v, z);
    for (int x = 0; x < W; ++x) g[static_cast<size_t>(y) * W + x] = d[x];
  }
  return g;
}

}  // namespace m2n2
