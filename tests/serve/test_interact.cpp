// POST /api/v1/interact in process (so that it runs under the sanitizers): base64, the
// upload decoding against read_rgb, sessions by content, and the refusals.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <random>
#include <thread>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "m2n2/io/image_decode.hpp"
#include "serve/base64.hpp"
#include "serve/interact.hpp"
#include "serve/session_pool.hpp"

using namespace m2n2;
using nlohmann::json;

namespace {

std::string bytes_of(const cv::Mat& img, const std::string& ext) {
  std::vector<uint8_t> buf;
  cv::imencode(ext, img, buf);
  return std::string(buf.begin(), buf.end());
}

cv::Mat picture() {
  cv::Mat bgr(60, 80, CV_8UC3, cv::Scalar(200, 60, 30));
  cv::circle(bgr, cv::Point(30, 30), 15, cv::Scalar(40, 200, 220), cv::FILLED);
  return bgr;
}

}  // namespace

TEST(Base64, RoundTripsEveryLengthAndRefusesWhatNoEncoderWrites) {
  std::mt19937 rng(7);
  for (size_t n = 0; n < 40; ++n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    const std::string text = serve::base64_encode(s);
    EXPECT_EQ(text.size() % 4, 0u);
    EXPECT_EQ(serve::base64_decode(text).value(), s);
    std::string unpadded = text;
    while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
    EXPECT_EQ(serve::base64_decode(unpadded).value(), s) << "unpadded, length " << n;
  }
  EXPECT_EQ(serve::base64_encode("Man"), "TWFu");
  EXPECT_EQ(serve::base64_decode("TW\nFu").value(), "Man");
  for (const char* bad : {"A", "AB=C", "A===", "TWFu=", "@@@@", "TW-u", "TWF\x80"})
    EXPECT_FALSE(serve::base64_decode(bad).has_value()) << bad;
}

TEST(DecodeRgb, GivesReadRgbsPixelsAndErrors) {
  const auto dir = std::filesystem::temp_directory_path() / ("m2n2-decode-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  cv::Mat gray, bgra;
  cv::cvtColor(picture(), gray, cv::COLOR_BGR2GRAY);
  cv::cvtColor(picture(), bgra, cv::COLOR_BGR2BGRA);
  for (const cv::Mat& img : {picture(), gray, bgra}) {
    const std::string png = bytes_of(img, ".png");
    const std::string path = (dir / "x.png").string();
    cv::imwrite(path, img);
    const cv::Mat a = read_rgb(path).rgb, b = decode_rgb("upload", png, 1000000).rgb;
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0);
  }
  std::filesystem::remove_all(dir);
  const std::string png = bytes_of(picture(), ".png");
  EXPECT_THROW(decode_rgb("upload", png.substr(0, png.size() / 2), 1000000), Error);
  EXPECT_THROW(decode_rgb("upload", png, 100), Error);  // 80x60 over 100 pixels
  EXPECT_THROW(decode_rgb("upload", "", 1000000), Error);
}

TEST(Interact, AnswersUploadsByContentAndRefusesBadRequests) {
  EngineOptions o;
  o.source = "default";
  o.grid = 16;
  o.device = Device::Cpu;
  Engine engine(o);
  serve::Interact* interact = nullptr;
  serve::SessionPool pool(engine, [&](const std::string& key) { return interact->uploaded(key); }, 0);
  serve::InteractLimits limits;
  limits.max_pixels = 100000;
  limits.max_clicks = 3;
  serve::Interact api(pool, [](const std::string&) { return false; }, limits);
  interact = &api;
  httplib::Server http;
  api.register_routes(http);
  const int port = http.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread server([&] { http.listen_after_bind(); });
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(120, 0);
  auto post = [&](const json& body, int status) {
    auto r = client.Post("/api/v1/interact", body.dump(), "application/json");
    EXPECT_TRUE(r);
    if (!r) return json();
    EXPECT_EQ(r->status, status) << r->body;
    return json::parse(r->body);
  };

  const std::string png = serve::base64_encode(bytes_of(picture(), ".png"));
  const json clicks = json::array({{{"x", 30}, {"y", 30}}, {{"x", 70}, {"y", 50}, {"positive", false}}});
  const json first = post({{"image_base64", png}, {"clicks", clicks}}, 200);
  EXPECT_FALSE(first["reused"].get<bool>());
  const std::string again = png;
  const json second = post({{"image_base64", "data:image/png;base64," + again}, {"clicks", clicks}, {"format", "rle"}}, 200);
  EXPECT_TRUE(second["reused"].get<bool>());
  EXPECT_EQ(second["session"], first["session"]);
  const json third = post({{"image_base64", png}, {"clicks", clicks}, {"format", "polygons"}, {"tolerance", 0}}, 200);
  EXPECT_FALSE(third["polygons"].empty());
  const cv::Mat mask = cv::imdecode(
      [&] {
        const std::string b = serve::base64_decode(first["mask_png"].get<std::string>()).value();
        return std::vector<uint8_t>(b.begin(), b.end());
      }(),
      cv::IMREAD_UNCHANGED);
  EXPECT_EQ(cv::countNonZero(mask), first["area"].get<int>());
  EXPECT_EQ(mask.at<uint8_t>(30, 30), 255);

  post({{"image_base64", "%%%"}, {"clicks", clicks}}, 400);
  post({{"image_base64", png}, {"clicks", json::array({{{"x", 1}, {"y", 1}}, {{"x", 2}, {"y", 1}}, {{"x", 3}, {"y", 1}}, {{"x", 4}, {"y", 1}}})}}, 422);
  post({{"image_base64", png}, {"clicks", json::array({{{"x", 500}, {"y", 1}}})}}, 422);
  cv::Mat big(400, 400, CV_8UC3, cv::Scalar(1, 2, 3));  // 160,000 pixels over the 100,000 limit
  post({{"image_base64", serve::base64_encode(bytes_of(big, ".png"))}, {"clicks", clicks}}, 422);
  post({{"image_base64", serve::base64_encode(bytes_of(big, ".jpg"))}, {"clicks", clicks}}, 422);
  post({{"image", "a.png"}, {"clicks", clicks}}, 404);
  post({{"image_base64", png}, {"clicks", clicks}, {"format", "svg"}}, 400);
  auto r = client.Post("/api/v1/interact", "[[[[", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  http.stop();
  server.join();
  pool.shutdown();
}
