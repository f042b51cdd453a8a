#include "m2n2/io/rle.hpp"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "m2n2/core/error.hpp"

namespace m2n2 {

std::vector<uint32_t> rle_counts(const cv::Mat& mask) {
  CV_Assert(mask.type() == CV_8U);
  std::vector<uint32_t> counts;
  bool cur = false;
  uint32_t run = 0;
  for (int x = 0; x < mask.cols; ++x)
    for (int y = 0; y < mask.rows; ++y) {
      const bool v = mask.at<uint8_t>(y, x) != 0;
      if (v != cur) {
        counts.push_back(run);
        run = 0;
        cur = v;
      }
      ++run;
    }
  counts.push_back(run);
  return counts;
}

cv::Mat rle_decode(const std::vector<uint32_t>& counts, int height, int width) {
  if (height < 0 || width < 0) throw Error("RLE: negative size");
  cv::Mat m = cv::Mat::zeros(height, width, CV_8U);
  const int64_t total = static_cast<int64_t>(height) * width;
  int64_t pos = 0;
  bool v = false;
  for (uint32_t c : counts) {
    if (pos + c > total) throw Error("RLE: counts exceed the mask size");
    if (v)
      for (int64_t i = pos; i < pos + c; ++i) m.at<uint8_t>(static_cast<int>(i % height), static_cast<int>(i / height)) = 255;
    pos += c;
    v = !v;
  }
  if (pos != total) throw Error("RLE: counts do not cover the mask (" + std::to_string(pos) + " of " + std::to_string(total) + ")");
  return m;
}

std::string rle_to_string(const std::vector<uint32_t>& counts) {
  std::string s;
  for (size_t i = 0; i < counts.size(); ++i) {
    int64_t x = counts[i];
    if (i > 2) x -= static_cast<int64_t>(counts[i - 2]);
    bool more = true;
    while (more) {
      int64_t c = x & 0x1f;
      x >>= 5;
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s += static_cast<char>(c + 48);
    }
  }
  return s;
}

std::vector<uint32_t> rle_from_string(const std::string& s) {
  std::vector<uint32_t> counts;
  size_t p = 0;
  while (p < s.size()) {
    int64_t x = 0;
    int k = 0;
    bool more = true;
    while (more) {
      if (p >= s.size()) throw Error("RLE string: truncated");
      const int64_t c = static_cast<int64_t>(s[p]) - 48;
      if (c < 0 || c > 63) throw Error("RLE string: invalid character");
      // A count is below 2^32 and a difference of two counts above -2^32: 7 characters
      // of 5 bits hold it, and keep every shift below 64 bits.
      if (k >= 7) throw Error("RLE string: run too long (more than 7 characters)");
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= -(static_cast<int64_t>(1) << (5 * k));
    }
    if (counts.size() > 2) x += static_cast<int64_t>(counts[counts.size() - 2]);
    if (x < 0 || x > 0xffffffffLL) throw Error("RLE string: invalid count");
    counts.push_back(static_cast<uint32_t>(x));
  }
  return counts;
}

cv::Mat polygons_to_mask(const std::vector<std::vector<double>>& polygons, int height, int width) {
  // Bounded work: the vertices, and the scanlines the edges cross (clipped to the image),
  // which is what the scanline fill costs; real annotations are far below both.
  size_t vertices = 0;
  for (const auto& poly : polygons) vertices += poly.size() / 2;
  if (vertices > kMaxPolygonVertices)
    throw Error("COCO polygon: " + std::to_string(vertices) + " vertices, more than " +
                std::to_string(kMaxPolygonVertices));
  double crossings = 0;
  const double fill_budget = 2.0 * height * width + 1e7;
  for (const auto& poly : polygons) {
    const size_t n = poly.size() / 2;
    for (size_t k = 0; k < n; ++k) {
      const double a = poly[2 * k + 1], b = poly[2 * ((k + 1) % n) + 1];
      if (!std::isfinite(a) || !std::isfinite(b)) continue;  // refused below
      const double top = static_cast<double>(height);
      crossings += std::fabs(std::clamp(a, -1.0, top) - std::clamp(b, -1.0, top)) + 1;
    }
  }
  if (crossings > fill_budget)
    throw Error("COCO polygon: edges cross " + std::to_string(static_cast<long long>(crossings)) +
                " scanlines, more than the fill budget of this image");
  cv::Mat m = cv::Mat::zeros(height, width, CV_8U);
  std::vector<std::vector<cv::Point>> pts;
  for (const auto& poly : polygons) {
    if (poly.size() < 6 || poly.size() % 2) throw Error("COCO polygon: needs an even number (>= 6) of coordinates");
    std::vector<cv::Point> p;
    for (size_t i = 0; i + 1 < poly.size(); i += 2) {
      if (!std::isfinite(poly[i]) || !std::isfinite(poly[i + 1])) throw Error("COCO polygon: non-finite coordinate");
      const double x = std::max(-1e6, std::min(1e6, poly[i])), y = std::max(-1e6, std::min(1e6, poly[i + 1]));
      p.emplace_back(static_cast<int>(std::lround(x * 8)), static_cast<int>(std::lround(y * 8)));
    }
    pts.push_back(std::move(p));
  }
  if (!pts.empty()) cv::fillPoly(m, pts, cv::Scalar(255), cv::LINE_8, 3);
  return m;
}

}  // namespace m2n2
