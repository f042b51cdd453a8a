#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "m2n2/eval/click_simulator.hpp"
#include "m2n2/interactive/distance_transform.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/io/npy.hpp"
#include "test_util.hpp"

using namespace m2n2;
namespace fs = std::filesystem;

TEST(DistanceTransform, ExactOnSmallMask) {
  cv::Mat m(5, 5, CV_8U, cv::Scalar(1));
  m.at<uint8_t>(0, 0) = 0;
  const auto d = squared_edt(m);
  EXPECT_EQ(d[0], 0);
  EXPECT_EQ(d[4], 16);
  EXPECT_EQ(d[24], 32);
  EXPECT_EQ(d[2 * 5 + 1], 5);
}

// Every case of the reference click vectors, both protocols, exact match. tests/data/clicks
// is a byte-for-byte copy of shared/testdata/clicks (scripts/make_test_data.py).
TEST(ClickSimulator, MatchesReferenceVectors) {
  const fs::path dir = fs::path(test::data_dir()) / "clicks";
  const auto j = nlohmann::json::parse(read_file((dir / "clicks.json").string()));
  int checked = 0;
  for (const auto& c : j["cases"]) {
    const cv::Mat gt = read_mask((dir / c["gt"].get<std::string>()).string());
    const cv::Mat pred = read_mask((dir / c["pred"].get<std::string>()).string());
    const cv::Mat vd = read_mask((dir / c["void"].get<std::string>()).string());
    std::vector<cv::Point> prev;
    for (const auto& p : c["previous_clicks"]) prev.emplace_back(p["x"].get<int>(), p["y"].get<int>());
    for (const char* proto : {"m2n2", "ritm"}) {
      const auto& e = c["expected"][proto];
      const auto got = next_click(gt, pred, vd, prev, parse_protocol(proto));
      EXPECT_EQ(got.x, e["x"].get<int>()) << c["name"] << " " << proto;
      EXPECT_EQ(got.y, e["y"].get<int>()) << c["name"] << " " << proto;
      EXPECT_EQ(got.positive, e["positive"].get<bool>()) << c["name"] << " " << proto;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * static_cast<int>(j["cases"].size()));
  EXPECT_GE(checked, 80);
}

TEST(ClickSimulator, PerfectPredictionStillClicksInsideTheObject) {
  cv::Mat gt = cv::Mat::zeros(20, 20, CV_8U);
  gt(cv::Rect(5, 5, 9, 9)).setTo(255);
  const auto c = next_click(gt, gt, cv::Mat(), {}, Protocol::M2N2);
  EXPECT_EQ(c.x, 9);
  EXPECT_EQ(c.y, 9);
  EXPECT_TRUE(c.positive);
}
