#include "m2n2/eval/click_simulator.hpp"

#include "m2n2/interactive/distance_transform.hpp"
#include "m2n2/core/error.hpp"

namespace m2n2 {

Protocol parse_protocol(const std::string& s) {
  if (s == "m2n2") return Protocol::M2N2;
  if (s == "ritm") return Protocol::Ritm;
  throw Error("protocol: expected m2n2 or ritm, got '" + s + "'");
}

std::string to_string(Protocol p) { return p == Protocol::M2N2 ? "m2n2" : "ritm"; }

namespace {

// Squared distances inside `m` to the nearest zero, with a one-pixel zero border.
std::vector<int64_t> padded_edt(const cv::Mat& m) {
  cv::Mat padded;
  cv::copyMakeBorder(m, padded, 1, 1, 1, 1, cv::BORDER_CONSTANT, cv::Scalar(0));
  auto full = squared_edt(padded);
  std::vector<int64_t> out(static_cast<size_t>(m.rows) * m.cols);
  for (int y = 0; y < m.rows; ++y)
    for (int x = 0; x < m.cols; ++x) out[static_cast<size_t>(y) * m.cols + x] = full[static_cast<size_t>(y + 1) * padded.cols + x + 1];
  return out;
}

// First maximum in row-major order.
size_t argmax(const std::vector<int64_t>& v) {
  size_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

}  // namespace

SimulatedClick next_click(const cv::Mat& gt, const cv::Mat& pred, const cv::Mat& void_mask,
                          const std::vector<cv::Point>& previous, Protocol protocol) {
  if (gt.empty() || gt.size() != pred.size()) throw Error("next-click: GT and prediction must have the same size");
  if (!void_mask.empty() && void_mask.size() != gt.size()) throw Error("next-click: void mask has a different size");
  const int W = gt.cols;
  cv::Mat g = gt != 0, p = pred != 0;
  SimulatedClick c;
  if (protocol == Protocol::M2N2) {
    cv::Mat err = g != p;
    if (cv::countNonZero(err) == 0) err = g.clone();
    auto dt = padded_edt(err);
    const size_t i = argmax(dt);
    c.x = static_cast<int>(i % W);
    c.y = static_cast<int>(i / W);
    c.positive = g.at<uint8_t>(c.y, c.x) != 0;
    return c;
  }
  cv::Mat not_void = void_mask.empty() ? cv::Mat(gt.size(), CV_8U, cv::Scalar(255)) : (void_mask == 0);
  cv::Mat fn = g & ~p & not_void;
  cv::Mat fp = ~g & p & not_void;
  auto dfn = padded_edt(fn);
  auto dfp = padded_edt(fp);
  for (const auto& q : previous) {
    if (q.x < 0 || q.y < 0 || q.x >= W || q.y >= gt.rows) continue;
    const size_t i = static_cast<size_t>(q.y) * W + q.x;
    dfn[i] = 0;
    dfp[i] = 0;
  }
  const size_t ifn = argmax(dfn), ifp = argmax(dfp);
  const bool positive = dfn[ifn] > dfp[ifp];
  const size_t i = positive ? ifn : ifp;
  c.x = static_cast<int>(i % W);
  c.y = static_cast<int>(i / W);
  c.positive = positive;
  return c;
}

}  // namespace m2n2
