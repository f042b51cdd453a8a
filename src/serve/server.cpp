#include "serve/server.hpp"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "m2n2/io/click_file.hpp"
#include "m2n2/io/json_read.hpp"
#include "m2n2/io/visuals.hpp"
#include "m2n2/version.hpp"
#include "serve/annotations.hpp"
#include "serve/assets.hpp"
#include "serve/base64.hpp"
#include "serve/guard.hpp"
#include "serve/interact.hpp"
#include "serve/session_pool.hpp"

namespace m2n2::serve {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A request the server refuses: its status and the one-line message of the JSON error.
struct HttpError : std::runtime_error {
  int status;
  HttpError(int s, const std::string& m) : std::runtime_error(m), status(s) {}
};

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  static const std::set<std::string> known = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"};
  return known.count(ext) > 0;
}

std::string encode_jpeg(const cv::Mat& rgb, int quality) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> buf;
  if (!cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_QUALITY, quality})) throw Error("cannot encode JPEG");
  return std::string(buf.begin(), buf.end());
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void send_json(httplib::Response& res, const json& j, int status = 200) {
  res.status = status;
  res.set_content(j.dump(), "application/json");
}

json parse_body(const httplib::Request& req) {
  json j;
  try {
    j = read_json(req.body, "request body");
  } catch (const Error& e) {
    throw HttpError(400, e.what());
  } catch (const json::exception&) {
    throw HttpError(400, "request body is not valid JSON");
  }
  if (!j.is_object()) throw HttpError(400, "request body must be a JSON object");
  return j;
}

// An object's clicks, checked as a click file's are (duplicates dropped, conflicts refused).
ObjectSpec parse_object_json(const json& object) {
  const ImageSpec spec = parse_image_entry({{"image", "request"}, {"objects", json::array({object})}});
  if (!spec.error.empty()) throw HttpError(400, spec.error);
  const ObjectSpec& os = spec.objects.front();
  if (!os.error.empty()) throw HttpError(400, (object.contains("id") ? os.id + ": " : std::string()) + os.error);
  return os;
}

}  // namespace

constexpr size_t kThreads = 32;  // connections served at once

struct Server::Impl {
  ServeOptions opt;
  Engine engine;
  AnnotationStore store;
  std::unique_ptr<SessionPool> pool;
  std::unique_ptr<Interact> interact;  // POST /api/v1/interact and its uploaded images
  httplib::Server http;
  fs::path root;  // the images folder, canonical
  mutable std::shared_mutex names_mu;
  std::vector<std::string> names;  // sorted
  std::set<std::string> name_set;
  GuardConfig guard;  // complete once bound (the port)
  std::mutex thumbs_mu;
  std::map<std::string, std::pair<std::string, std::string>> thumbs;  // name -> (file version, JPEG)

  Impl(EngineOptions e, ServeOptions o)
      : opt(std::move(o)), engine(with_progress(std::move(e))), store(opt.images_dir, opt.out_dir) {
    guard.token = opt.token.empty() ? random_token() : opt.token;
    guard.bind_host = opt.host;
    guard.allow_hosts = opt.allow_hosts;
    guard.max_body_bytes = opt.max_body_bytes;
    std::error_code ec;
    if (!fs::is_directory(opt.images_dir, ec)) throw InvalidArgument("--images " + opt.images_dir + ": not a folder");
    root = fs::canonical(opt.images_dir);
    rescan();
    pool = std::make_unique<SessionPool>(
        engine,
        [this](const std::string& name) {
          return Interact::is_upload_key(name) ? interact->uploaded(name) : open_image(name);
        },
        opt.memory_budget);
    InteractLimits limits;
    limits.max_pixels = opt.max_pixels;
    limits.max_clicks = opt.max_clicks;
    interact = std::make_unique<Interact>(
        *pool,
        [this](const std::string& name) {
          std::shared_lock<std::shared_mutex> lock(names_mu);
          return name_set.count(name) > 0;
        },
        limits);
    std::string clicks = opt.clicks_file;
    if (clicks.empty() && fs::exists(store.click_file(), ec)) clicks = store.click_file();
    if (!clicks.empty()) {
      try {
        store.load(clicks, name_set, opt.warn);
      } catch (const Error& err) {
        throw InvalidArgument(std::string("--clicks ") + err.what());
      }
      info("resuming from " + clicks);
    }
    routes();
    protect();
  }

  // The engine reports its progress to the session being prepared.
  EngineOptions with_progress(EngineOptions e) {
    e.progress = [this](const std::string& stage, double fraction) {
      if (pool) pool->on_progress(stage, fraction);
    };
    return e;
  }

  void info(const std::string& m) const {
    if (opt.info) opt.info(m);
  }
  void warn(const std::string& m) const {
    if (opt.warn) opt.warn(m);
  }

  // Lists the images of the folder: regular files with an image extension whose real
  // path stays inside it (a symbolic link out of the folder is left out).
  void rescan() {
    std::vector<std::string> found;
    for (const auto& path : list_files(root.string())) {
      const fs::path p(path);
      if (!is_image_file(p)) continue;
      std::error_code ec;
      const fs::path real = fs::canonical(p, ec);
      const std::string rel = real.lexically_relative(root).generic_string();
      if (ec || rel.empty() || rel.rfind("..", 0) == 0) {
        warn(path + ": links outside " + root.string() + "; not served");
        continue;
      }
      found.push_back(p.filename().string());
    }
    std::unique_lock<std::shared_mutex> lock(names_mu);
    names = found;
    name_set = std::set<std::string>(found.begin(), found.end());
  }

  // The image a request names, refused unless it is one of the listed files.
  std::string image_name(const std::string& name) const {
    if (name.empty()) throw HttpError(400, "missing \"image\"");
    const fs::path p(name);
    if (p.is_absolute() || name.find('\\') != std::string::npos ||
        std::any_of(p.begin(), p.end(), [](const fs::path& c) { return c == ".."; }))
      throw HttpError(400, name + ": not a file name inside the images folder");
    std::shared_lock<std::shared_mutex> lock(names_mu);
    if (!name_set.count(name)) throw HttpError(404, name + ": unknown image");
    return name;
  }

  std::string image_of(const json& body) const {
    if (!body.contains("image") || !body["image"].is_string()) throw HttpError(400, "\"image\" must be a string");
    return image_name(body["image"].get<std::string>());
  }

  std::vector<std::string> image_list() const {
    std::shared_lock<std::shared_mutex> lock(names_mu);
    return names;
  }

  // Runs fn on the image's session; preparation failures and refusals become HTTP errors.
  void with_session(const std::string& name, const std::function<void(Session&)>& fn) {
    try {
      pool->use(name, fn);
    } catch (const HttpError&) {
      throw;
    } catch (const InvalidArgument& e) {
      throw HttpError(400, e.what());
    } catch (const std::exception& e) {
      throw HttpError(500, one_line_message(e));
    }
  }

  // Distinct clicks of a request, all objects together, against --max-clicks.
  void check_click_count(const std::vector<ObjectSpec>& objects) const {
    size_t n = 0;
    for (const auto& os : objects) n += os.clicks.size();
    if (n > opt.max_clicks)
      throw HttpError(422, std::to_string(n) + " distinct clicks in one request (--max-clicks is " +
                               std::to_string(opt.max_clicks) + ")");
  }

  // Opens an image of the folder, checked again now (a file swapped for a symbolic link
  // after the listing must still lead inside the folder) and within --max-pixels.
  cv::Mat open_image(const std::string& name) const {
    std::error_code ec;
    const fs::path real = fs::canonical(root / name, ec);
    const std::string rel = ec ? std::string() : real.lexically_relative(root).generic_string();
    if (ec || rel.empty() || rel.rfind("..", 0) == 0 || !fs::is_regular_file(real, ec))
      throw HttpError(404, name + ": no longer a file inside the images folder");
    try {
      return read_rgb(real.string(), opt.max_pixels).rgb;
    } catch (const Error& e) {
      throw HttpError(422, e.what());
    }
  }

  // Thumbnails are made once per file version (size and time) and kept (160 px JPEGs).
  std::string thumbnail(const std::string& name) {
    std::error_code ec;
    const fs::path p = root / name;
    const std::string version = std::to_string(fs::file_size(p, ec)) + ":" +
                                std::to_string(fs::last_write_time(p, ec).time_since_epoch().count());
    {
      std::lock_guard<std::mutex> lock(thumbs_mu);
      auto it = thumbs.find(name);
      if (it != thumbs.end() && it->second.first == version) return it->second.second;
    }
    const cv::Mat rgb = open_image(name);
    const double s = 160.0 / std::max(rgb.cols, rgb.rows);
    cv::Mat small = rgb;
    if (s < 1) cv::resize(rgb, small, cv::Size(), s, s, cv::INTER_AREA);
    std::string jpeg = encode_jpeg(small, 80);
    std::lock_guard<std::mutex> lock(thumbs_mu);
    thumbs[name] = {version, jpeg};
    return jpeg;
  }

  static void check_inside(const std::vector<Click>& clicks, const Session& s) {
    try {
      check_clicks_inside(clicks, s.size());
    } catch (const Error& e) {
      throw HttpError(422, e.what());
    }
  }

  // Wraps a handler: HttpError and every other exception become a one-line JSON error.
  httplib::Server::Handler handler(std::function<void(const httplib::Request&, httplib::Response&)> fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        fn(req, res);
      } catch (const HttpError& e) {
        send_json(res, {{"error", e.what()}}, e.status);
      } catch (const std::exception& e) {
        warn(req.path + ": " + one_line_message(e));
        send_json(res, {{"error", one_line_message(e)}}, 500);
      }
    };
  }

  // The routes of this file. Routes of other files (e.g. the annotation tools' API)
  // register on `http` from here too, by one call each: protect() covers them alike.
  void routes();
  void protect();
};

// Every request passes through check_request() before it is routed and before its body
// is read: the routes of this file and those other files register on `http` alike.
void Server::Impl::protect() {
  http.set_default_headers({{"X-Frame-Options", "DENY"},
                            {"Content-Security-Policy", "frame-ancestors 'none'"},
                            {"X-Content-Type-Options", "nosniff"},
                            {"Referrer-Policy", "no-referrer"}});
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.path.rfind("/api/", 0) == 0) res.set_header("Cache-Control", "no-store");
    const Refusal refusal = check_request(guard, req);
    if (!refusal) return httplib::Server::HandlerResponse::Unhandled;
    send_json(res, {{"error", refusal.message}}, refusal.status);
    return httplib::Server::HandlerResponse::Handled;
  });
  http.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, {{"status", "ok"}}); });
  http.set_payload_max_length(opt.max_body_bytes);
  // A slow client holds one thread at most read-timeout long per byte; the pool is large
  // enough that a handful of them leave the others answered.
  http.set_read_timeout(5, 0);
  http.set_write_timeout(5, 0);
  // One request per connection: a refused request's body is never read, and nothing of
  // it can be taken for a next request.
  http.set_keep_alive_max_count(1);
  http.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
}

void Server::Impl::routes() {
  for (size_t i = 0; i < kAssetCount; ++i) {
    const Asset a = kAssets[i];
    http.Get(a.path, [a](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-cache");
      res.set_content(reinterpret_cast<const char*>(a.data), a.size, a.content_type);
    });
  }

  http.Get("/api/info", handler([this](const httplib::Request&, httplib::Response& res) {
    const auto& p = engine.params();
    send_json(res, {{"version", M2N2_VERSION},
                    {"source", engine.source_id()},
                    {"device", to_string(engine.options().device)},
                    {"images_dir", root.string()},
                    {"out_dir", store.out_dir()},
                    {"click_file", store.click_file()},
                    {"images", image_list().size()},
                    {"max_body_bytes", opt.max_body_bytes},
                    {"params",
                     {{"temperature", p.op.temperature},
                      {"ipf_iterations", p.op.ipf_iterations},
                      {"markov_threshold", p.markov.threshold},
                      {"max_side", p.max_side}}}});
  }));

  http.Get("/api/images", handler([this](const httplib::Request&, httplib::Response& res) {
    rescan();
    json list = json::array();
    for (const auto& name : image_list())
      list.push_back({{"name", name}, {"saved", store.count(name)}, {"state", pool->status(name).state}});
    send_json(res, {{"images", list}});
  }));

  // The image as m2n2 decodes it (orientation, channels), so that page pixels are its pixels.
  http.Get("/api/image", handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string name = image_name(req.get_param_value("name"));
    const cv::Mat rgb = open_image(name);
    res.set_header("X-Image-Width", std::to_string(rgb.cols));
    res.set_header("X-Image-Height", std::to_string(rgb.rows));
    res.set_content(encode_jpeg(rgb, 92), "image/jpeg");
  }));

  http.Get("/api/thumb", handler([this](const httplib::Request& req, httplib::Response& res) {
    res.set_content(thumbnail(image_name(req.get_param_value("name"))), "image/jpeg");
  }));

  http.Post("/api/prepare", handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string name = image_of(parse_body(req));
    send_json(res, pool->request(name).to_json());
  }));

  http.Get("/api/status", handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string name = image_name(req.get_param_value("image"));
    send_json(res, pool->status(name).to_json());
  }));

  http.Get("/api/sessions", handler([this](const httplib::Request&, httplib::Response& res) {
    send_json(res, pool->summary());
  }));

  // {"image", "clicks": [...], "format": "png"|"rle", "soft": bool} -> the mask of the clicks.
  http.Post("/api/segment", handler([this](const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    const std::string name = image_of(body);
    const ObjectSpec os = parse_object_json({{"clicks", body.value("clicks", json())}});
    check_click_count({os});
    const std::string format = body.value("format", std::string("png"));
    if (format != "png" && format != "rle") throw HttpError(400, "\"format\" must be \"png\" or \"rle\"");
    const bool soft = body.value("soft", false);
    json out;
    with_session(name, [&](Session& s) {
      check_inside(os.clicks, s);
      const auto t0 = std::chrono::steady_clock::now();
      const Segmenter::Result r = s.segment(os.clicks);
      out["ms_segment"] = ms_since(t0);
      out["width"] = r.mask.cols;
      out["height"] = r.mask.rows;
      out["area"] = cv::countNonZero(r.mask);
      if (format == "png") out["mask_png"] = base64_encode(encode_png(r.mask));
      else out["rle"] = rle_json(r.mask);
      if (soft) {
        cv::Mat shown;  // the distance map, boundary at 0.5 of the colour range
        cv::min(r.soft, 2.0, shown);
        out["soft_png"] = base64_encode(encode_png(heatmap_png(shown)));
      }
      json choices = json::array();
      for (const auto& c : r.choices) choices.push_back({{"threshold", c.threshold}, {"score", c.score}});
      out["choices"] = choices;
    });
    out["clicks"] = clicks_json(os.clicks);
    send_json(res, out);
  }));

  // {"image", "x", "y"} -> the Markov-map of that pixel (first-crossing steps on the grid).
  http.Post("/api/markov-map", handler([this](const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    const std::string name = image_of(body);
    const ObjectSpec os = parse_object_json({{"clicks", json::array({{{"x", body.value("x", json())}, {"y", body.value("y", json())}}})}});
    json out;
    with_session(name, [&](Session& s) {
      check_inside(os.clicks, s);
      const cv::Mat m = s.markov_map(click_pixel(os.clicks.front()));
      double lo = 0, hi = 0;
      cv::minMaxLoc(m, &lo, &hi);
      out = {{"png", base64_encode(encode_png(heatmap_png(m)))}, {"grid", {m.cols, m.rows}}, {"min_steps", lo}, {"max_steps", hi}};
    });
    send_json(res, out);
  }));

  http.Get("/api/annotations", handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string name = image_name(req.get_param_value("image"));
    send_json(res, {{"image", name}, {"objects", store.objects(name)}});
  }));

  // {"image", "objects": [{"id", "clicks"}]} -> masks written as `m2n2 segment` writes them.
  http.Post("/api/save", handler([this](const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    const std::string name = image_of(body);
    if (!body.contains("objects") || !body["objects"].is_array() || body["objects"].empty())
      throw HttpError(400, "\"objects\" must be a non-empty list");
    const ImageSpec spec = parse_image_entry({{"image", name}, {"objects", body["objects"]}});
    if (!spec.error.empty()) throw HttpError(400, spec.error);
    for (const auto& os : spec.objects)
      if (!os.error.empty()) throw HttpError(400, os.id + ": " + os.error);
    check_click_count(spec.objects);
    std::vector<AnnotationStore::Saved> results;
    with_session(name, [&](Session& s) {
      for (const auto& os : spec.objects) check_inside(os.clicks, s);
      for (const auto& os : spec.objects) results.push_back({os.id, os.clicks, s.segment(os.clicks)});
    });
    const json saved = store.save(name, results);
    send_json(res, {{"image", name}, {"saved", saved}, {"click_file", store.click_file()}});
  }));

  http.Post("/api/delete", handler([this](const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    const std::string name = image_of(body);
    if (!body.contains("id") || !body["id"].is_string()) throw HttpError(400, "\"id\" must be a string");
    if (!store.remove(name, body["id"].get<std::string>()))
      throw HttpError(404, name + " / " + body["id"].get<std::string>() + ": not saved");
    send_json(res, {{"image", name}, {"deleted", body["id"]}});
  }));

  http.Get("/api/export/coco", handler([this](const httplib::Request&, httplib::Response& res) {
    res.set_header("Content-Disposition", "attachment; filename=\"m2n2_coco_results.json\"");
    send_json(res, store.coco(image_list()));
  }));

  interact->register_routes(http);

  // Statuses set by httplib itself (404 route, 413 body, 400 bad request): a JSON error too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "bad request (HTTP " + std::to_string(res.status) + ")";
    if (res.status == 404) message = req.path + ": no such page or endpoint";
    if (res.status == 405) message = req.method + " " + req.path + ": method not allowed";
    if (res.status == 413) message = "request body too large";
    if (res.status >= 500) message = "internal error (HTTP " + std::to_string(res.status) + ")";
    res.set_content(json({{"error", message}}).dump(), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string message = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      message = one_line_message(e);
    } catch (...) {
    }
    send_json(res, {{"error", message}}, 500);
  });
}

Server::Server(EngineOptions engine, ServeOptions options)
    : impl_(std::make_unique<Impl>(std::move(engine), std::move(options))) {}

Server::~Server() {
  stop();
  impl_->pool.reset();  // joins the preparation worker while everything it uses is still there
}

int Server::bind() {
  auto& I = *impl_;
  int port = I.opt.port;
  bool ok = false;
  if (port == 0) {
    port = I.http.bind_to_any_port(I.opt.host);
    ok = port > 0;
  } else {
    ok = I.http.bind_to_port(I.opt.host, port);
  }
  if (!ok) throw Error("cannot listen on " + I.opt.host + ":" + std::to_string(I.opt.port) + " (in use, or not an address of this machine)");
  I.guard.port = port;
  return port;
}

void Server::run() { impl_->http.listen_after_bind(); }

void Server::stop() {
  impl_->pool->shutdown();  // requests waiting for a preparation give up
  impl_->http.stop();
}

size_t Server::image_count() const { return impl_->image_list().size(); }

const std::string& Server::token() const { return impl_->guard.token; }

}  // namespace m2n2::serve
