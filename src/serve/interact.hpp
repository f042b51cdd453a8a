// POST /api/v1/interact: the endpoint annotation tools call (CVAT, Label Studio, scripts).
// An image — uploaded as base64 PNG/JPEG, or the name of a listed image — and clicks give
// a mask as PNG, COCO RLE or polygons. Uploaded images get a session keyed by their
// content hash, so a tool's successive clicks on one image reuse its preparation.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <opencv2/core.hpp>

namespace httplib {
class Server;
}

namespace m2n2::serve {

class SessionPool;

struct InteractLimits {
  int64_t max_pixels = 400000000;  // size of an uploaded image (--max-pixels; the declared size is checked first)
  size_t max_clicks = 1000;        // distinct clicks of one request (--max-clicks)
};

class Interact {
 public:
  // `listed` says whether a name is one of the served images (their sessions are shared
  // with the page); uploads are prepared through `pool` under the key "upload:HASH".
  Interact(SessionPool& pool, std::function<bool(const std::string&)> listed, InteractLimits limits);

  static bool is_upload_key(const std::string& key);
  // The decoded upload of a session key while a request holds it; throws Error otherwise.
  cv::Mat uploaded(const std::string& key) const;

  // Adds POST /api/v1/interact.
  void register_routes(httplib::Server& http);

 private:
  std::shared_ptr<const cv::Mat> hold(const std::string& key, std::shared_ptr<const cv::Mat> image);

  SessionPool& pool_;
  std::function<bool(const std::string&)> listed_;
  InteractLimits limits_;
  mutable std::mutex mu_;
  // Uploads held by requests in flight (weak: an upload lives as long as a request uses it).
  std::map<std::string, std::weak_ptr<const cv::Mat>> uploads_;
};

}  // namespace m2n2::serve
