#include "m2n2/io/polygons.hpp"

#include <cmath>
#include <limits>
#include <opencv2/imgproc.hpp>

#include "m2n2/core/error.hpp"

namespace m2n2 {
namespace {

// Directions on the corner lattice, clockwise as the image shows them.
constexpr int kDx[4] = {1, 0, -1, 0};
constexpr int kDy[4] = {0, 1, 0, -1};

// Drops the vertices of a closed lattice walk where the direction does not change.
std::vector<cv::Point> corners_of(const std::vector<cv::Point>& walk) {
  std::vector<cv::Point> out;
  const size_t n = walk.size();
  for (size_t i = 0; i < n; ++i) {
    const cv::Point& a = walk[(i + n - 1) % n];
    const cv::Point& b = walk[i];
    const cv::Point& c = walk[(i + 1) % n];
    if ((b - a) != (c - b)) out.push_back(b);  // unit steps: same step = collinear
  }
  return out;
}

std::vector<cv::Point> simplify(const std::vector<cv::Point>& ring, double tolerance) {
  if (tolerance <= 0 || ring.size() <= 3) return ring;
  std::vector<cv::Point> out;
  cv::approxPolyDP(ring, out, tolerance, true);
  return out;
}

// `base` with each of `rings` joined to it by a bridge between their nearest vertices
// (`base`'s vertices only, so the cost is |base| times the rings' vertices).
std::vector<cv::Point> attach(const std::vector<cv::Point>& base, const std::vector<const std::vector<cv::Point>*>& rings) {
  if (rings.empty() || base.empty()) return base;
  std::vector<std::vector<std::pair<size_t, size_t>>> at(base.size());  // per base vertex: (ring, its vertex)
  for (size_t r = 0; r < rings.size(); ++r) {
    const auto& ring = *rings[r];
    if (ring.empty()) continue;
    long long best = std::numeric_limits<long long>::max();
    size_t bi = 0, bj = 0;
    for (size_t i = 0; i < base.size(); ++i)
      for (size_t j = 0; j < ring.size(); ++j) {
        const long long dx = static_cast<long long>(base[i].x) - ring[j].x, dy = static_cast<long long>(base[i].y) - ring[j].y;
        const long long d = dx * dx + dy * dy;
        if (d < best) best = d, bi = i, bj = j;
      }
    at[bi].push_back({r, bj});
  }
  std::vector<cv::Point> out;
  for (size_t i = 0; i < base.size(); ++i) {
    out.push_back(base[i]);
    for (const auto& [r, j] : at[i]) {
      const auto& ring = *rings[r];
      for (size_t k = 0; k <= ring.size(); ++k) out.push_back(ring[(j + k) % ring.size()]);
      out.push_back(base[i]);
    }
  }
  return out;
}

}  // namespace

long long twice_signed_area(const std::vector<cv::Point>& ring) {
  long long s = 0;
  for (size_t i = 0; i < ring.size(); ++i) {
    const cv::Point& a = ring[i];
    const cv::Point& b = ring[(i + 1) % ring.size()];
    s += static_cast<long long>(a.x) * b.y - static_cast<long long>(b.x) * a.y;
  }
  return s;
}

std::vector<MaskPolygon> mask_to_polygons(const cv::Mat& mask, double tolerance) {
  if (mask.empty() && mask.type() == CV_8U) return {};
  if (mask.type() != CV_8U || mask.dims != 2) throw InvalidArgument("mask_to_polygons: the mask must be a 2-D CV_8U matrix");
  if (!std::isfinite(tolerance) || tolerance < 0) throw InvalidArgument("mask_to_polygons: the tolerance must be finite and >= 0");
  const int W = mask.cols, H = mask.rows;
  cv::Mat fg = mask != 0;  // 0/255
  cv::Mat labels;
  const int n = cv::connectedComponents(fg, labels, 8, CV_32S);
  if (n <= 1) return {};
  // Components in the order of their first pixel in row-major order.
  std::vector<int> order(static_cast<size_t>(n), -1);
  int next = 0;
  for (int y = 0; y < H; ++y) {
    const int* l = labels.ptr<int>(y);
    for (int x = 0; x < W; ++x)
      if (l[x] > 0 && order[static_cast<size_t>(l[x])] < 0) order[static_cast<size_t>(l[x])] = next++;
  }
  // Boundary edges with the object on their right: one bit per direction and corner.
  const int VW = W + 1;
  std::vector<uint8_t> out_edges(static_cast<size_t>(VW) * (H + 1), 0);
  const auto on = [&](int x, int y) { return x >= 0 && y >= 0 && x < W && y < H && fg.at<uint8_t>(y, x) != 0; };
  const auto vid = [&](int x, int y) { return static_cast<size_t>(y) * VW + x; };
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      if (!on(x, y)) continue;
      if (!on(x, y - 1)) out_edges[vid(x, y)] |= 1 << 0;          // top, walked right
      if (!on(x + 1, y)) out_edges[vid(x + 1, y)] |= 1 << 1;      // right side, walked down
      if (!on(x, y + 1)) out_edges[vid(x + 1, y + 1)] |= 1 << 2;  // bottom, walked left
      if (!on(x - 1, y)) out_edges[vid(x, y + 1)] |= 1 << 3;      // left side, walked up
    }
  const std::vector<uint8_t> all_edges = out_edges;
  std::vector<MaskPolygon> result(static_cast<size_t>(n - 1));
  std::vector<std::vector<std::vector<cv::Point>>> holes(static_cast<size_t>(n - 1));
  std::vector<cv::Point> walk;
  for (int vy = 0; vy <= H; ++vy)
    for (int vx = 0; vx <= W; ++vx)
      for (int d0 = 0; d0 < 4; ++d0) {
        if (!(out_edges[vid(vx, vy)] & (1 << d0))) continue;
        // The object pixel on the right of the first edge names the component.
        static constexpr int kPx[4] = {0, -1, -1, 0}, kPy[4] = {0, 0, -1, -1};
        const int label = labels.at<int>(vy + kPy[d0], vx + kPx[d0]);
        walk.clear();
        int x = vx, y = vy, d = d0;
        for (;;) {
          walk.emplace_back(x, y);
          out_edges[vid(x, y)] &= static_cast<uint8_t>(~(1 << d));
          x += kDx[d];
          y += kDy[d];
          const uint8_t here = all_edges[vid(x, y)];
          // Where two object pixels touch at a corner, turning left keeps them one
          // boundary (8-connected objects); elsewhere there is one way on.
          const int left = (d + 3) % 4, right = (d + 1) % 4;
          if (here & (1 << left)) d = left;
          else if (!(here & (1 << d))) d = right;
          if (x == vx && y == vy && d == d0) break;  // the loop is closed
        }
        std::vector<cv::Point> ring = corners_of(walk);
        const long long area2 = twice_signed_area(ring);
        const size_t c = static_cast<size_t>(order[static_cast<size_t>(label)]);
        if (area2 > 0) {
          std::vector<cv::Point> s = simplify(ring, tolerance);
          result[c].outer = s.size() >= 3 ? std::move(s) : std::move(ring);
        } else {
          std::vector<cv::Point> s = simplify(ring, tolerance);
          if (s.size() >= 3 && twice_signed_area(s) < 0) holes[c].push_back(std::move(s));
        }
      }
  for (size_t c = 0; c < result.size(); ++c) result[c].holes = std::move(holes[c]);
  return result;
}

std::vector<cv::Point> bridge_holes(const MaskPolygon& polygon) {
  std::vector<const std::vector<cv::Point>*> rings;
  for (const auto& h : polygon.holes) rings.push_back(&h);
  return attach(polygon.outer, rings);
}

std::vector<cv::Point> bridge_all(const std::vector<MaskPolygon>& polygons) {
  if (polygons.empty()) return {};
  std::vector<std::vector<cv::Point>> bridged;
  for (const auto& p : polygons) bridged.push_back(bridge_holes(p));
  std::vector<const std::vector<cv::Point>*> rest;
  for (size_t i = 1; i < bridged.size(); ++i) rest.push_back(&bridged[i]);
  return attach(bridged[0], rest);
}

}  // namespace m2n2
