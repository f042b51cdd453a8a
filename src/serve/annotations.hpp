// What the annotator saved: per image, named objects with their clicks. Masks are
// written as `m2n2 segment` writes them (OUT/<folder>/<id>.png, the folder by
// OutputFolders in the click file's order) and all clicks to one click file,
// OUT/clicks.json, in the documented schema with image paths relative to it, so that
// `m2n2 segment --clicks OUT/clicks.json --out X` reproduces every mask.
//
// Saves and deletes of one image are serialised, and the files change in an order
// that keeps, at every instant (a kill -9 included), each mask on disk equal to what
// the click file on disk gives for it: an object's old mask is removed before its
// record changes in the click file, and its new mask is written (temporary file and
// rename) only after the click file that records its clicks is in place.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "m2n2/io/output_folder.hpp"
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
  struct Saved {
    std::string id;
    std::vector<Click> clicks;
    Segmenter::Result result;
  };
  // Saves objects of an image (replacing earlier ones of the same ids): their masks and
  // the click file, in the order described above. Returns [{"id", "mask", "area"...}].
  nlohmann::json save(const std::string& image, const std::vector<Saved>& objects);
  // Forgets an object: its mask goes first, then its record; false if it was not saved.
  bool remove(const std::string& image, const std::string& id);

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
  // Rewrites the click file (temporary file + rename: never half-written); mu_ held.
  void commit_locked();
  void add_image_locked(const std::string& image);
  std::string mask_path_locked(const std::string& image, const std::string& id) const;
  std::mutex& image_mutex(const std::string& image);

  std::string images_dir_, out_dir_;
  mutable std::mutex mu_;
  std::map<std::string, std::vector<Object>> saved_;  // image name -> objects
  std::vector<std::string> order_;                    // images in click file order
  mutable OutputFolders folders_;                     // image name -> OUT/<folder>, in order_
  std::map<std::string, std::unique_ptr<std::mutex>> image_mu_;
};

// Clicks as the click file writes them.
nlohmann::json clicks_json(const std::vector<Click>& clicks);

}  // namespace m2n2::serve
