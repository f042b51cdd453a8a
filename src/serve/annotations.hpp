// What the annotator saved: per image, named objects with their clicks. Masks are
// written as `m2n2 segment` writes them (OUT/<stem>/<id>.png) and all clicks to one
// click file, OUT/clicks.json, in the documented schema with image paths relative to
// it, so that `m2n2 segment --clicks OUT/clicks.json --out X` reproduces every mask.
#pragma once
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "m2n2/m2n2.hpp"

namespace m2n2::serve {

class AnnotationStore {
 public:
  // `images_dir`: the served folder (image names are relative to it); `out_dir`: where
  // masks and the click file go (created on the first save).
  AnnotationStore(std::string images_dir, std::string out_dir);

  // Loads a click file; its image paths are relative to its own folder. Entries whose
  // image is not one of `names`, and objects with errors, are skipped with a warning.
  // Throws Error("FILE: problem") when the file is unreadable or not a click file.
  void load(const std::string& click_file, const std::set<std::string>& names, const WarnFn& warn);

  // [{"id": ID, "clicks": [{"x", "y", "positive"}], "mask": PATH}] of an image, in saved order.
  nlohmann::json objects(const std::string& image) const;
  size_t count(const std::string& image) const;

  // The mask file of an object.
  std::string mask_path(const std::string& image, const std::string& id) const;
  // Writes one object's mask (replacing an earlier one) and records its clicks; call
  // commit() after the objects of a request to rewrite the click file.
  nlohmann::json save(const std::string& image, const std::string& id, const std::vector<Click>& clicks,
                      const Segmenter::Result& result);
  // Forgets an object and removes its mask; false if it was not saved.
  bool remove(const std::string& image, const std::string& id);
  // Rewrites the click file (temporary file + rename: never half-written).
  void commit();

  // COCO results of every saved object, written by segment --export's code with its id
  // rules (m2n2/io/export.hpp): [{"image_id", "category_id", "segmentation": RLE, "score": 1,
  // "bbox", "file_name", "object_id", "area"}], image ids numbering `names` from 1, the
  // category "object" (id 1).
  nlohmann::json coco(const std::vector<std::string>& names) const;

  std::string click_file() const { return out_dir_ + "/clicks.json"; }
  const std::string& out_dir() const { return out_dir_; }

 private:
  struct Object {
    std::string id;
    std::vector<Click> clicks;
  };
  std::string images_dir_, out_dir_;
  mutable std::mutex mu_;
  std::map<std::string, std::vector<Object>> saved_;  // image name -> objects
};

// Clicks as the click file writes them.
nlohmann::json clicks_json(const std::vector<Click>& clicks);

}  // namespace m2n2::serve
