// Benchmark dataset readers behind one small interface: folder pairs
// (images/ + masks/, GrabCut/Berkeley or DAVIS conventions) and COCO instances.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

enum class MaskConvention { GrabCut, Davis };  // >128 fg, 128 void | >0 fg

struct Instance {
  std::string id;          // unique within the dataset
  std::string image_path;
  std::string mask_path;   // folder datasets
  nlohmann::json coco;     // COCO annotation (segmentation), else null
  int coco_h = 0, coco_w = 0;
  MaskConvention convention = MaskConvention::GrabCut;
};

// Ground truth of one instance: fg (CV_8U 0/1) and void (CV_8U 0/1).
struct GroundTruth {
  cv::Mat fg, void_mask;
};

// `dataset`: a folder with images/ and masks/ (or RITM's data_GT/ + boundary_GT/, img/ +
// gt/), or a COCO JSON file (integer or string ids) (then `images`
// is the image folder, default: the JSON's folder). Sorted by id.
std::vector<Instance> read_dataset(const std::string& dataset, const std::string& images, MaskConvention convention);
// The COCO reader on the file's text (also the fuzzing entry point).
std::vector<Instance> parse_coco(const std::string& text, const std::filesystem::path& json_path,
                                 const std::string& images_dir);
GroundTruth load_ground_truth(const Instance& inst);
// Instances grouped by image (images in order of their first instance, instances in
// their given order), so that one image's attention serves all its instances.
std::vector<std::vector<Instance>> group_by_image(const std::vector<Instance>& instances);
MaskConvention parse_convention(const std::string& s);  // grabcut | davis
// The first `count` of a seeded permutation of 0..n-1, as NumPy's
// `numpy.random.seed(seed); numpy.random.permutation(n)[:count]` draws it.
std::vector<size_t> subset_indices(size_t n, size_t count, uint32_t seed);
// `count` instances drawn by subset_indices, kept in dataset order (count 0 or >= size: all).
std::vector<Instance> select_subset(std::vector<Instance> all, size_t count, uint32_t seed);

}  // namespace m2n2
