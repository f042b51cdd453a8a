// m2n2 — masks written in the formats other tools read: COCO results and instances
// (RLE or polygons), LabelMe and YOLO-seg (docs/export.md). `segment --export` and
// `serve`'s COCO export share these writers and their id rules.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "m2n2/io/polygons.hpp"

namespace m2n2 {

struct ExportObject {
  std::string id;               // the object's id (its mask's name)
  long long category_id = -1;   // -1: none given
  std::string label;            // "": none given
  std::string mask_path;        // CV_8U PNG, non-zero = object
  double score = 1.0;
};

struct ExportImage {
  std::string file_name;  // the image as the click file names it
  long long number = 0;   // its image id when ids are numbered (0: its place in the list)
  std::string stem;       // names the LabelMe and YOLO files
  std::string image_path; // where the image is (LabelMe's imagePath is made relative to it)
  int width = 0, height = 0;  // 0: taken from the masks (not checked)
  std::vector<ExportObject> objects;
};

struct ExportCategory {
  nlohmann::json id;  // integer (or as the ground truth has it)
  std::string name;
};

// Image and category ids. Without a ground truth: an image's `number`, else its place
// in the list from 1 (one id per file name: the first entry's); a category per given category_id (named by the first
// label given with it, else "category_<id>"), a label without an id joins the category
// of that name or gets the next free id, objects with neither join "object".
// With a ground truth (COCO instances file): ids by file name (exact, else a unique
// base name) and by category id or name; an object with neither takes the only
// category. What cannot be matched throws Error naming the file and the image/object.
struct ExportIds {
  std::map<std::string, nlohmann::json> image_ids;  // file name -> id
  std::vector<ExportCategory> categories;           // sorted by id where ids are numbers
  nlohmann::json category_of(const ExportObject& o) const;
  int class_index(const ExportObject& o) const;     // position in categories (YOLO)
  std::map<std::string, nlohmann::json> by_label_;  // label -> id
  std::map<long long, nlohmann::json> by_id_;       // given id -> id
  nlohmann::json default_;                          // for objects with neither
};
ExportIds assign_export_ids(const std::vector<ExportImage>& images, const std::string& coco_gt = "");

// The formats. Every object's mask is read from its mask_path (Error when unreadable or
// of another size than its image).
nlohmann::json coco_results_json(const std::vector<ExportImage>& images, const ExportIds& ids);
nlohmann::json coco_instances_json(const std::vector<ExportImage>& images, const ExportIds& ids, bool polygons,
                                   double tolerance = kDefaultPolygonTolerance);
// `labelme_dir`: where the file goes (its imagePath is relative to it).
nlohmann::json labelme_json(const ExportImage& image, const ExportIds& ids, const std::string& labelme_dir,
                            double tolerance = kDefaultPolygonTolerance);
std::string yolo_seg_text(const ExportImage& image, const ExportIds& ids, double tolerance = kDefaultPolygonTolerance);
// The id mapping written beside the COCO files when no ground truth gave the ids.
nlohmann::json export_ids_json(const ExportIds& ids);

struct ExportOptions {
  std::vector<std::string> formats;  // coco-results, coco-instances, labelme, yolo-seg
  bool polygons = false;
  double tolerance = kDefaultPolygonTolerance;
  std::string coco_gt;
};
// The known format names, and a comma list checked against them (InvalidArgument).
const std::vector<std::string>& export_formats();
std::vector<std::string> parse_export_formats(const std::string& list);
// Writes the chosen formats under `out` (each file whole or not at all): coco_results.json,
// coco_instances.json, export_ids.json (ids numbered here), labelme/<stem>.json,
// yolo/<stem>.txt and yolo/classes.txt. Returns the paths written.
std::vector<std::string> write_exports(const std::string& out, const std::vector<ExportImage>& images,
                                       const ExportOptions& options);

}  // namespace m2n2
