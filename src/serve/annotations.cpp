#include "serve/annotations.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "m2n2/io/click_file.hpp"
#include "m2n2/io/export.hpp"
#include "m2n2/io/rle.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/io/visuals.hpp"

namespace m2n2::serve {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path normal_absolute(const fs::path& p) { return fs::absolute(p).lexically_normal(); }

}  // namespace

nlohmann::json clicks_json(const std::vector<Click>& clicks) {
  nlohmann::json list = nlohmann::json::array();
  auto number = [](double v) { return v == std::nearbyint(v) && std::fabs(v) < 1e15 ? json(static_cast<long long>(v)) : json(v); };
  for (const auto& c : clicks) list.push_back({{"x", number(c.x)}, {"y", number(c.y)}, {"positive", c.positive}});
  return list;
}

AnnotationStore::AnnotationStore(std::string images_dir, std::string out_dir)
    : images_dir_(normal_absolute(images_dir).string()), out_dir_(normal_absolute(out_dir).string()) {}

void AnnotationStore::load(const std::string& click_file, const std::set<std::string>& names, const WarnFn& warn) {
  const std::string text = read_file(click_file);
  const std::vector<ImageSpec> specs = parse_click_file(text, click_file);
  const fs::path base = normal_absolute(click_file).parent_path();
  const fs::path root = fs::weakly_canonical(images_dir_);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& spec : specs) {
    const std::string where = click_file + ": " + (spec.image.empty() ? "<entry>" : spec.image);
    if (!spec.error.empty()) {
      if (warn) warn(where + ": " + spec.error + "; skipped");
      continue;
    }
    const fs::path p = fs::path(spec.image).is_absolute() ? fs::path(spec.image) : base / spec.image;
    const std::string name = fs::weakly_canonical(p).lexically_relative(root).generic_string();
    if (!names.count(name)) {
      if (warn) warn(where + ": not an image of " + images_dir_ + "; skipped");
      continue;
    }
    add_image_locked(name);
    auto& objects = saved_[name];
    for (const auto& os : spec.objects) {
      if (!os.error.empty()) {
        if (warn) warn(where + " / " + os.id + ": " + os.error + "; skipped");
        continue;
      }
      auto same = std::find_if(objects.begin(), objects.end(), [&](const Object& o) { return o.id == os.id; });
      if (same != objects.end()) same->clicks = os.clicks;
      else objects.push_back({os.id, os.clicks});
    }
    if (objects.empty()) {
      saved_.erase(name);
      order_.erase(std::remove(order_.begin(), order_.end(), name), order_.end());
    }
  }
}

// An image joins the click file's order, and gets its output folder, when first saved.
void AnnotationStore::add_image_locked(const std::string& image) {
  if (std::find(order_.begin(), order_.end(), image) != order_.end()) return;
  folders_.folder(image);
  order_.push_back(image);
}

std::mutex& AnnotationStore::image_mutex(const std::string& image) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& m = image_mu_[image];
  if (!m) m = std::make_unique<std::mutex>();
  return *m;
}

nlohmann::json AnnotationStore::objects(const std::string& image) const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json list = nlohmann::json::array();
  auto it = saved_.find(image);
  if (it == saved_.end()) return list;
  for (const auto& o : it->second) {
    nlohmann::json j = {{"id", o.id}, {"clicks", clicks_json(o.clicks)}};
    std::error_code ec;
    const std::string mask = mask_path_locked(image, o.id);
    if (fs::exists(mask, ec)) j["mask"] = mask;
    list.push_back(j);
  }
  return list;
}

size_t AnnotationStore::count(const std::string& image) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = saved_.find(image);
  return it == saved_.end() ? 0 : it->second.size();
}

std::string AnnotationStore::mask_path(const std::string& image, const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return mask_path_locked(image, id);
}

std::string AnnotationStore::mask_path_locked(const std::string& image, const std::string& id) const {
  return (fs::path(out_dir_) / folders_.folder(image) / (id + ".png")).string();
}

nlohmann::json AnnotationStore::save(const std::string& image, const std::vector<Saved>& objects) {
  std::lock_guard<std::mutex> serial(image_mutex(image));
  std::error_code ec;
  std::vector<std::string> paths;
  {
    std::lock_guard<std::mutex> lock(mu_);
    add_image_locked(image);
    for (const auto& o : objects) paths.push_back(mask_path_locked(image, o.id));
  }
  // 1. The old masks go: no mask on disk disagrees with the click file from here on.
  for (const auto& path : paths) fs::remove(path, ec);
  // 2. The click file with the new clicks.
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& saved = saved_[image];
    for (const auto& o : objects) {
      auto same = std::find_if(saved.begin(), saved.end(), [&](const Object& s) { return s.id == o.id; });
      if (same != saved.end()) same->clicks = o.clicks;
      else saved.push_back({o.id, o.clicks});
    }
    commit_locked();
  }
  // 3. The new masks, each through a temporary file and a rename.
  nlohmann::json list = nlohmann::json::array();
  for (size_t k = 0; k < objects.size(); ++k) {
    const auto& o = objects[k];
    const std::string& path = paths[k];
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) throw Error(fs::path(path).parent_path().string() + ": cannot create output folder (" + ec.message() + ")");
    SaveOptions options;
    options.overwrite = true;
    // Only the mask is written (no overlay), so the image itself is not needed.
    nlohmann::json j = save_result(path, o.result, cv::Mat(), o.clicks, options);
    j["id"] = o.id;
    list.push_back(j);
  }
  return list;
}

bool AnnotationStore::remove(const std::string& image, const std::string& id) {
  std::lock_guard<std::mutex> serial(image_mutex(image));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = saved_.find(image);
    if (it == saved_.end() ||
        std::none_of(it->second.begin(), it->second.end(), [&](const Object& o) { return o.id == id; }))
      return false;
  }
  // The mask first: a kill between the two leaves a record whose mask `segment` remakes.
  std::error_code ec;
  fs::remove(mask_path(image, id), ec);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = saved_.find(image);
  auto& objects = it->second;
  objects.erase(std::find_if(objects.begin(), objects.end(), [&](const Object& o) { return o.id == id; }));
  if (objects.empty()) {
    saved_.erase(it);
    order_.erase(std::remove(order_.begin(), order_.end(), image), order_.end());
  }
  commit_locked();
  return true;
}

void AnnotationStore::commit_locked() {
  nlohmann::json images = nlohmann::json::array();
  const fs::path out = out_dir_;
  for (const auto& name : order_) {
    const auto it = saved_.find(name);
    if (it == saved_.end()) continue;  // its first save is under way
    nlohmann::json objects = nlohmann::json::array();
    for (const auto& o : it->second) objects.push_back({{"id", o.id}, {"clicks", clicks_json(o.clicks)}});
    const fs::path image = (fs::path(images_dir_) / name).lexically_normal();
    images.push_back({{"image", image.lexically_relative(out).generic_string()}, {"objects", objects}});
  }
  std::error_code ec;
  fs::create_directories(out, ec);
  write_file_atomic(click_file(), nlohmann::json({{"images", images}}).dump(1) + "\n");
}

nlohmann::json AnnotationStore::coco(const std::vector<std::string>& names) const {
  std::lock_guard<std::mutex> lock(mu_);
  // The export of `segment --export coco-results`, its id rules included: image ids number
  // `names` from 1, objects without a class share the category "object".
  std::vector<ExportImage> images;
  for (size_t i = 0; i < names.size(); ++i) {
    ExportImage im;
    im.file_name = names[i];
    im.number = static_cast<long long>(i) + 1;
    auto it = saved_.find(names[i]);
    if (it != saved_.end())
      for (const auto& o : it->second) {
        std::error_code ec;
        const std::string mask = mask_path_locked(names[i], o.id);
        if (!fs::is_regular_file(mask, ec)) continue;  // listed from a click file, not saved as a mask yet
        im.objects.push_back({o.id, -1, "", mask, 1.0});
      }
    images.push_back(std::move(im));
  }
  nlohmann::json results = coco_results_json(images, assign_export_ids(images));
  size_t k = 0;  // the results follow the images' objects in order
  for (const auto& im : images)
    for (const auto& o : im.objects) {
      auto& r = results[k++];
      r["file_name"] = im.file_name;
      r["object_id"] = o.id;
      const auto counts = rle_from_string(r["segmentation"]["counts"].get<std::string>());
      long long area = 0;
      for (size_t j = 1; j < counts.size(); j += 2) area += counts[j];  // the runs of ones
      r["area"] = area;
    }
  return results;
}

}  // namespace m2n2::serve
