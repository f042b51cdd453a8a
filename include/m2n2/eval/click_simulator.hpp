// m2n2 — the click simulators of the NoC protocols (see spec/evaluation.md).
#pragma once
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

enum class Protocol { M2N2, Ritm };
Protocol parse_protocol(const std::string& s);  // "m2n2" | "ritm"
std::string to_string(Protocol p);

struct SimulatedClick {
  int x = 0, y = 0;
  bool positive = true;
};

// gt, pred: CV_8U, non-zero = foreground. void_mask: CV_8U non-zero = void, or empty.
// `previous`: earlier clicks (used by `ritm` only). The `m2n2` protocol ignores
// void and previous clicks: the caller builds its GT (void counted as foreground).
SimulatedClick next_click(const cv::Mat& gt, const cv::Mat& pred, const cv::Mat& void_mask,
                          const std::vector<cv::Point>& previous, Protocol protocol);

}  // namespace m2n2
