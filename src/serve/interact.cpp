#include "serve/interact.hpp"

#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "m2n2/io/click_file.hpp"
#include "m2n2/io/image_decode.hpp"
#include "m2n2/io/json_read.hpp"
#include "m2n2/io/polygons.hpp"
#include "m2n2/io/rle.hpp"
#include "m2n2/io/visuals.hpp"
#include "m2n2/m2n2.hpp"
#include "serve/annotations.hpp"
#include "serve/base64.hpp"
#include "serve/session_pool.hpp"

namespace m2n2::serve {
using nlohmann::json;

namespace {

const char* kUploadPrefix = "upload:";

// A refused request: its HTTP status and the one-line message of the JSON error.
struct Refused : std::runtime_error {
  int status;
  Refused(int s, const std::string& m) : std::runtime_error(m), status(s) {}
};

uint32_t be16(const std::string& b, size_t i) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(b[i])) << 8) | static_cast<unsigned char>(b[i + 1]);
}

// The size a JPEG declares in its frame header, read before anything is decoded
// ({0, 0} when no frame header precedes the scan). Bounded by the bytes given.
cv::Size jpeg_declared_size(const std::string& b) {
  size_t i = 2;
  while (i + 4 <= b.size()) {
    if (static_cast<unsigned char>(b[i]) != 0xFF) return {};
    const auto m = static_cast<unsigned char>(b[i + 1]);
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // markers without a length
      i += 2;
      continue;
    }
    if (m == 0xDA || m == 0xD9) return {};  // the scan (or the end) before any frame header
    const uint32_t len = be16(b, i + 2);
    const bool frame = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (frame) {
      if (i + 9 > b.size() || len < 7) return {};
      return {static_cast<int>(be16(b, i + 7)), static_cast<int>(be16(b, i + 5))};
    }
    i += 2 + len;
  }
  return {};
}

// An uploaded image: base64 (a data: URL prefix allowed) of a PNG or JPEG, its declared
// size checked against the limit before decoding, then decoded as read_rgb decodes files.
cv::Mat decode_upload(const std::string& text, int64_t max_pixels) {
  size_t start = 0;
  if (text.rfind("data:", 0) == 0) {
    const size_t comma = text.find(',');
    if (comma == std::string::npos || text.substr(0, comma).find(";base64") == std::string::npos)
      throw Refused(400, "image_base64: a data: URL must be base64");
    start = comma + 1;
  }
  const auto bytes = base64_decode(start ? text.substr(start) : text);
  if (!bytes) throw Refused(400, "image_base64: not valid base64");
  const bool png = bytes->size() >= 8 && bytes->compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
  const bool jpeg = bytes->size() >= 3 && bytes->compare(0, 3, "\xFF\xD8\xFF") == 0;
  if (!png && !jpeg) throw Refused(400, "image_base64: not a PNG or JPEG file");
  if (jpeg) {
    const cv::Size s = jpeg_declared_size(*bytes);
    if (s.width <= 0 || s.height <= 0) throw Refused(400, "image_base64: JPEG without a frame header");
    if (static_cast<int64_t>(s.width) * s.height > max_pixels)
      throw Refused(422, "image_base64: image of " + std::to_string(s.width) + "x" + std::to_string(s.height) +
                             " is too large (--max-pixels is " + std::to_string(max_pixels) + ")");
  }
  try {
    return decode_rgb("image_base64", *bytes, max_pixels).rgb;
  } catch (const Error& e) {
    const std::string m = e.what();
    throw Refused(m.find("too large") != std::string::npos ? 422 : 400, m);
  }
}

// The request's clicks, checked as a click file's are, at most `max_clicks` distinct ones.
// Only x, y and positive of each click are looked at (nothing else of the body is copied).
std::vector<Click> parse_clicks(const json& body, size_t max_clicks) {
  const auto it = body.find("clicks");
  if (it == body.end() || !it->is_array() || it->empty()) throw Refused(400, "\"clicks\" must be a non-empty list");
  json clicks = json::array();
  for (const auto& c : *it) {
    if (!c.is_object()) throw Refused(400, "each click must be an object {\"x\", \"y\", \"positive\"}");
    json k = json::object();
    for (const char* key : {"x", "y", "positive"}) {
      const auto f = c.find(key);
      if (f != c.end()) k[key] = f->is_primitive() ? *f : json("not a value");
    }
    clicks.push_back(std::move(k));
  }
  const ImageSpec spec = parse_image_entry({{"image", "request"}, {"objects", json::array({{{"clicks", clicks}}})}});
  if (!spec.error.empty()) throw Refused(400, spec.error);
  if (!spec.objects.front().error.empty()) throw Refused(400, spec.objects.front().error);
  const size_t n = spec.objects.front().clicks.size();
  if (n > max_clicks)
    throw Refused(422, std::to_string(n) + " distinct clicks in one request (--max-clicks is " + std::to_string(max_clicks) + ")");
  return spec.objects.front().clicks;
}

json flat_points(const std::vector<cv::Point>& contour) {
  json pts = json::array();
  for (const auto& p : contour) {
    pts.push_back(p.x);
    pts.push_back(p.y);
  }
  return pts;
}

// The mask's components (outer ring and holes, on the pixel-corner lattice), simplified
// within `tolerance` pixels.
json polygons_json(const cv::Mat& mask, double tolerance) {
  json out = json::array();
  for (const MaskPolygon& p : mask_to_polygons(mask, tolerance)) {
    json holes = json::array();
    for (const auto& h : p.holes) holes.push_back(flat_points(h));
    out.push_back({{"outer", flat_points(p.outer)}, {"holes", holes}});
  }
  return out;
}

void send(httplib::Response& res, const json& j, int status) {
  res.status = status;
  res.set_content(j.dump(), "application/json");
}

}  // namespace

Interact::Interact(SessionPool& pool, std::function<bool(const std::string&)> listed, InteractLimits limits)
    : pool_(pool), listed_(std::move(listed)), limits_(limits) {}

bool Interact::is_upload_key(const std::string& key) { return key.rfind(kUploadPrefix, 0) == 0; }

cv::Mat Interact::uploaded(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = uploads_.find(key);
  const auto image = it == uploads_.end() ? nullptr : it->second.lock();
  if (!image) throw Error(key + ": the uploaded image is no longer held; send it again");
  return *image;
}

std::shared_ptr<const cv::Mat> Interact::hold(const std::string& key, std::shared_ptr<const cv::Mat> image) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = uploads_.begin(); it != uploads_.end();) it = it->second.expired() ? uploads_.erase(it) : std::next(it);
  auto& slot = uploads_[key];
  if (auto held = slot.lock()) return held;  // requests on one image share one copy
  slot = image;
  return image;
}

void Interact::register_routes(httplib::Server& http) {
  http.Post("/api/v1/interact", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      json body;
      try {
        body = read_json(req.body, "request body");
      } catch (const Error& e) {
        throw Refused(400, e.what());
      } catch (const json::exception&) {
        throw Refused(400, "request body is not valid JSON");
      }
      if (!body.is_object()) throw Refused(400, "request body must be a JSON object");
      const bool by_name = body.contains("image"), upload = body.contains("image_base64");
      if (by_name == upload) throw Refused(400, "give exactly one of \"image\" (a listed image) and \"image_base64\"");
      std::string format = "png";
      if (body.contains("format")) format = body["format"].is_string() ? body["format"].get<std::string>() : "?";
      if (format != "png" && format != "rle" && format != "polygons")
        throw Refused(400, "\"format\" must be \"png\", \"rle\" or \"polygons\"");
      double tolerance = kDefaultPolygonTolerance;
      if (body.contains("tolerance")) {
        if (!body["tolerance"].is_number() || !(body["tolerance"].get<double>() >= 0) || body["tolerance"].get<double>() > 1000)
          throw Refused(400, "\"tolerance\" must be a number of pixels from 0 to 1000");
        tolerance = body["tolerance"].get<double>();
      }
      const std::vector<Click> clicks = parse_clicks(body, limits_.max_clicks);

      std::string key;
      std::shared_ptr<const cv::Mat> held;  // keeps an upload alive while its session is prepared
      if (by_name) {
        if (!body["image"].is_string()) throw Refused(400, "\"image\" must be a string");
        key = body["image"].get<std::string>();
        if (!listed_(key)) throw Refused(404, key + ": unknown image");
      } else {
        if (!body["image_base64"].is_string()) throw Refused(400, "\"image_base64\" must be a string");
        auto image = std::make_shared<const cv::Mat>(decode_upload(body["image_base64"].get_ref<const std::string&>(), limits_.max_pixels));
        key = kUploadPrefix + content_hash(*image);
        held = hold(key, std::move(image));
      }

      json out = {{"session", key}, {"reused", pool_.status(key).state == "ready"}};
      try {
        pool_.use(key, [&](Session& s) {
          try {
            check_clicks_inside(clicks, s.size());
          } catch (const Error& e) {
            throw Refused(422, e.what());
          }
          const auto t0 = std::chrono::steady_clock::now();
          const Segmenter::Result r = s.segment(clicks);
          out["ms_segment"] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
          out["width"] = r.mask.cols;
          out["height"] = r.mask.rows;
          out["area"] = cv::countNonZero(r.mask);
          if (format == "png") out["mask_png"] = base64_encode(encode_png(r.mask));
          else if (format == "rle") out["rle"] = rle_json(r.mask);
          else out["polygons"] = polygons_json(r.mask, tolerance);
        });
      } catch (const Refused&) {
        throw;
      } catch (const InvalidArgument& e) {
        throw Refused(400, e.what());
      } catch (const std::exception& e) {
        throw Refused(500, one_line_message(e));
      }
      out["clicks"] = clicks_json(clicks);
      send(res, out, 200);
    } catch (const Refused& e) {
      send(res, {{"error", one_line_message(e)}}, e.status);  // names from the request may hold line breaks
    } catch (const std::exception& e) {
      send(res, {{"error", one_line_message(e)}}, 500);
    }
  });
}

}  // namespace m2n2::serve
