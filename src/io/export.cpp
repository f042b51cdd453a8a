#include "m2n2/io/export.hpp"
#include "core/check.hpp"

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "m2n2/core/error.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/io/visuals.hpp"

namespace m2n2 {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

cv::Mat read_mask(const ExportImage& image, const ExportObject& o) {
  const cv::Mat m = cv::imread(o.mask_path, cv::IMREAD_GRAYSCALE);
  if (m.empty()) throw Error(o.mask_path + ": cannot read the mask of " + image.file_name + " / " + o.id);
  if (image.width > 0 && (m.cols != image.width || m.rows != image.height))
    throw Error(o.mask_path + ": mask is " + std::to_string(m.cols) + "x" + std::to_string(m.rows) + ", its image " +
                std::to_string(image.width) + "x" + std::to_string(image.height));
  return m;
}

json bbox_of(const cv::Mat& mask) {
  const cv::Rect b = cv::boundingRect(mask);
  return {b.x, b.y, b.width, b.height};
}

// COCO's polygon list: one ring per component, holes bridged in.
json coco_polygons(const std::vector<MaskPolygon>& ps) {
  json out = json::array();
  for (const auto& p : ps) {
    json ring = json::array();
    for (const cv::Point& q : bridge_holes(p)) {
      ring.push_back(q.x);
      ring.push_back(q.y);
    }
    out.push_back(ring);
  }
  return out;
}

json gt_id(const json& v, const std::string& where) {
  if (v.is_number_integer() || v.is_string()) return v;
  throw Error(where + ": ids must be integers or strings");
}

ExportIds ids_from_gt(const std::vector<ExportImage>& images, const std::string& coco_gt) {
  json gt;
  try {
    gt = json::parse(read_file(coco_gt));
  } catch (const json::exception& e) {
    throw Error(coco_gt + ": not JSON (" + std::string(e.what()) + ")");
  }
  if (!gt.is_object() || !gt.contains("images") || !gt["images"].is_array() || !gt.contains("categories") ||
      !gt["categories"].is_array())
    throw Error(coco_gt + ": a COCO file needs \"images\" and \"categories\" lists");
  std::map<std::string, json> by_name;
  std::map<std::string, std::vector<json>> by_base;
  for (const auto& im : gt["images"]) {
    if (!im.is_object() || !im.contains("id") || !im.contains("file_name") || !im["file_name"].is_string())
      throw Error(coco_gt + ": image entries need \"id\" and \"file_name\"");
    const std::string name = im["file_name"].get<std::string>();
    const json id = gt_id(im["id"], coco_gt);
    by_name[name] = id;
    by_base[fs::path(name).filename().string()].push_back(id);
  }
  ExportIds ids;
  std::map<std::string, json> cat_by_name;
  for (const auto& c : gt["categories"]) {
    if (!c.is_object() || !c.contains("id")) throw Error(coco_gt + ": category entries need \"id\"");
    const json id = gt_id(c["id"], coco_gt);
    const std::string name = c.contains("name") && c["name"].is_string() ? c["name"].get<std::string>() : id.dump();
    ids.categories.push_back({id, name});
    cat_by_name[name] = id;
    if (id.is_number_integer()) ids.by_id_[id.get<long long>()] = id;
  }
  ids.by_label_ = cat_by_name;
  if (ids.categories.size() == 1) ids.default_ = ids.categories[0].id;
  for (const auto& im : images) {
    auto it = by_name.find(im.file_name);
    if (it != by_name.end()) {
      ids.image_ids[im.file_name] = it->second;
    } else {
      auto b = by_base.find(fs::path(im.file_name).filename().string());
      if (b == by_base.end() || b->second.size() != 1)
        throw Error(coco_gt + ": no image named " + im.file_name + (b == by_base.end() ? "" : " (its base name is not unique)"));
      ids.image_ids[im.file_name] = b->second.front();
    }
    for (const auto& o : im.objects) {
      const std::string where = coco_gt + ": " + im.file_name + " / " + o.id + ": ";
      if (o.category_id >= 0 && !ids.by_id_.count(o.category_id))
        throw Error(where + "category_id " + std::to_string(o.category_id) + " is not a category of the file");
      if (o.category_id < 0 && !o.label.empty() && !cat_by_name.count(o.label))
        throw Error(where + "no category named \"" + o.label + "\"");
      if (o.category_id < 0 && o.label.empty() && ids.default_.is_null())
        throw Error(where + "the object has no category_id or label and the file has several categories");
    }
  }
  return ids;
}

ExportIds numbered_ids(const std::vector<ExportImage>& images) {
  ExportIds ids;
  long long place = 0;
  std::map<long long, std::string> named;  // given id -> name
  for (const auto& im : images) {
    ++place;
    if (!ids.image_ids.count(im.file_name)) ids.image_ids[im.file_name] = im.number > 0 ? im.number : place;
    for (const auto& o : im.objects)
      if (o.category_id >= 0) {
        auto& n = named[o.category_id];
        if (n.empty()) n = o.label;
        if (!o.label.empty() && !ids.by_label_.count(o.label)) ids.by_label_[o.label] = o.category_id;
      }
  }
  long long next = 1;
  const auto free_id = [&]() {
    while (named.count(next)) ++next;
    return next;
  };
  for (const auto& im : images)
    for (const auto& o : im.objects) {
      if (o.category_id >= 0) continue;
      const std::string name = o.label.empty() ? "object" : o.label;
      if (ids.by_label_.count(name)) continue;
      const long long id = free_id();
      named[id] = name;
      ids.by_label_[name] = id;
    }
  for (auto& [id, name] : named) {
    ids.by_id_[id] = id;
    ids.categories.push_back({id, name.empty() ? "category_" + std::to_string(id) : name});
  }
  if (ids.by_label_.count("object")) ids.default_ = ids.by_label_["object"];
  return ids;
}

}  // namespace

json ExportIds::category_of(const ExportObject& o) const {
  if (o.category_id >= 0) {
    auto it = by_id_.find(o.category_id);
    if (it != by_id_.end()) return it->second;
  } else if (!o.label.empty()) {
    auto it = by_label_.find(o.label);
    if (it != by_label_.end()) return it->second;
  } else if (!default_.is_null()) {
    return default_;
  }
  throw Error("object " + o.id + ": no category");
}

int ExportIds::class_index(const ExportObject& o) const {
  const json id = category_of(o);
  for (size_t i = 0; i < categories.size(); ++i)
    if (categories[i].id == id) return static_cast<int>(i);
  throw Error("object " + o.id + ": no category");
}

ExportIds assign_export_ids(const std::vector<ExportImage>& images, const std::string& coco_gt) {
  return coco_gt.empty() ? numbered_ids(images) : ids_from_gt(images, coco_gt);
}

json export_ids_json(const ExportIds& ids) {
  json images = json::array(), cats = json::array();
  std::vector<std::pair<json, std::string>> ordered;
  for (const auto& [name, id] : ids.image_ids) ordered.push_back({id, name});
  std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [id, name] : ordered) images.push_back({{"id", id}, {"file_name", name}});
  for (const auto& c : ids.categories) cats.push_back({{"id", c.id}, {"name", c.name}});
  return {{"images", images}, {"categories", cats}};
}

json coco_results_json(const std::vector<ExportImage>& images, const ExportIds& ids) {
  json out = json::array();
  for (const auto& im : images)
    for (const auto& o : im.objects) {
      const cv::Mat m = read_mask(im, o);
      out.push_back({{"image_id", ids.image_ids.at(im.file_name)},
                     {"category_id", ids.category_of(o)},
                     {"segmentation", rle_json(m)},
                     {"score", o.score},
                     {"bbox", bbox_of(m)}});
    }
  return out;
}

json coco_instances_json(const std::vector<ExportImage>& images, const ExportIds& ids, bool polygons, double tolerance) {
  json imgs = json::array(), anns = json::array(), cats = json::array();
  std::set<std::string> listed;
  long long next_ann = 1;
  for (const auto& im : images) {
    if (listed.insert(im.file_name).second)
      imgs.push_back({{"id", ids.image_ids.at(im.file_name)}, {"file_name", im.file_name}, {"width", im.width}, {"height", im.height}});
    for (const auto& o : im.objects) {
      const cv::Mat m = read_mask(im, o);
      json seg = polygons ? coco_polygons(mask_to_polygons(m, tolerance)) : rle_json(m);
      anns.push_back({{"id", next_ann++},
                      {"image_id", ids.image_ids.at(im.file_name)},
                      {"category_id", ids.category_of(o)},
                      {"segmentation", seg},
                      {"area", cv::countNonZero(m)},
                      {"bbox", bbox_of(m)},
                      {"iscrowd", 0}});
    }
  }
  for (const auto& c : ids.categories) cats.push_back({{"id", c.id}, {"name", c.name}});
  return {{"images", imgs}, {"annotations", anns}, {"categories", cats}};
}

json labelme_json(const ExportImage& im, const ExportIds& ids, const std::string& labelme_dir, double tolerance) {
  json shapes = json::array();
  int group = 0;
  for (const auto& o : im.objects) {
    const cv::Mat m = read_mask(im, o);
    const json cat = ids.category_of(o);
    std::string label = o.label;
    if (label.empty())
      for (const auto& c : ids.categories)
        if (c.id == cat) label = c.name;
    // One shape per component (holes bridged in), an object's shapes sharing a group id.
    for (const auto& p : mask_to_polygons(m, tolerance)) {
      json pts = json::array();
      for (const cv::Point& q : bridge_holes(p)) pts.push_back({q.x, q.y});
      shapes.push_back({{"label", label},
                        {"points", pts},
                        {"group_id", group},
                        {"description", o.id},
                        {"shape_type", "polygon"},
                        {"flags", json::object()}});
    }
    ++group;
  }
  const fs::path rel = fs::absolute(im.image_path).lexically_normal().lexically_relative(fs::absolute(labelme_dir).lexically_normal());
  return {{"version", "5.2.1"},
          {"flags", json::object()},
          {"shapes", shapes},
          {"imagePath", rel.empty() ? im.image_path : rel.generic_string()},
          {"imageData", nullptr},
          {"imageHeight", im.height},
          {"imageWidth", im.width}};
}

std::string yolo_seg_text(const ExportImage& im, const ExportIds& ids, double tolerance) {
  std::ostringstream s;
  s.precision(6);
  s << std::fixed;
  for (const auto& o : im.objects) {
    const cv::Mat m = read_mask(im, o);
    const std::vector<cv::Point> ring = bridge_all(mask_to_polygons(m, tolerance));
    if (ring.size() < 3) continue;  // an empty mask has no polygon
    s << ids.class_index(o);
    for (const cv::Point& q : ring) s << ' ' << static_cast<double>(q.x) / im.width << ' ' << static_cast<double>(q.y) / im.height;
    s << '\n';
  }
  return s.str();
}

const std::vector<std::string>& export_formats() {
  static const std::vector<std::string> f = {"coco-results", "coco-instances", "labelme", "yolo-seg"};
  return f;
}

std::vector<std::string> parse_export_formats(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string f;
  while (std::getline(ss, f, ',')) {
    if (std::find(export_formats().begin(), export_formats().end(), f) == export_formats().end())
      throw InvalidArgument("export: unknown format '" + f + "' (coco-results, coco-instances, labelme, yolo-seg)");
    if (std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
  }
  if (out.empty()) throw InvalidArgument("export: name at least one format");
  return out;
}

std::vector<std::string> write_exports(const std::string& out, const std::vector<ExportImage>& images, const ExportOptions& o) {
  const ExportIds ids = assign_export_ids(images, o.coco_gt);
  const fs::path dir(out);
  std::vector<std::string> written;
  const auto has = [&](const char* f) { return std::find(o.formats.begin(), o.formats.end(), f) != o.formats.end(); };
  const auto put = [&](const fs::path& p, const std::string& text) {
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    write_file_atomic(p.string(), text);
    written.push_back(p.string());
  };
  if (has("coco-results")) put(dir / "coco_results.json", coco_results_json(images, ids).dump() + "\n");
  if (has("coco-instances")) put(dir / "coco_instances.json", coco_instances_json(images, ids, o.polygons, o.tolerance).dump() + "\n");
  if ((has("coco-results") || has("coco-instances")) && o.coco_gt.empty()) put(dir / "export_ids.json", export_ids_json(ids).dump(1) + "\n");
  // Entries that share a stem share a folder of masks, and a LabelMe and a YOLO file.
  std::vector<ExportImage> by_stem;
  for (const auto& im : images) {
    auto same = std::find_if(by_stem.begin(), by_stem.end(), [&](const ExportImage& e) { return e.stem == im.stem; });
    if (same == by_stem.end()) by_stem.push_back(im);
    else same->objects.insert(same->objects.end(), im.objects.begin(), im.objects.end());
  }
  if (has("labelme"))
    for (const auto& im : by_stem) put(dir / "labelme" / (im.stem + ".json"), labelme_json(im, ids, (dir / "labelme").string(), o.tolerance).dump(1) + "\n");
  if (has("yolo-seg")) {
    for (const auto& im : by_stem) put(dir / "yolo" / (im.stem + ".txt"), yolo_seg_text(im, ids, o.tolerance));
    std::string names;
    for (const auto& c : ids.categories) names += c.name + "\n";
    put(dir / "yolo" / "classes.txt", names);
  }
  return written;
}

}  // namespace m2n2
