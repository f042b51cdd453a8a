#include "m2n2/eval/datasets.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <optional>
#include <random>

#include "m2n2/core/error.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/io/npy.hpp"
#include "m2n2/io/rle.hpp"
#include "m2n2/io/json_read.hpp"

namespace m2n2 {
namespace fs = std::filesystem;

MaskConvention parse_convention(const std::string& s) {
  if (s == "grabcut" || s == "berkeley") return MaskConvention::GrabCut;
  if (s == "davis") return MaskConvention::Davis;
  throw Error("mask_format: expected grabcut or davis, got '" + s + "'");
}

namespace {

bool is_image_file(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e == ".jpg" || e == ".jpeg" || e == ".png" || e == ".bmp" || e == ".tif" || e == ".tiff" || e == ".webp";
}

// The folder layouts in use: ours (images/ + masks/), RITM's GrabCut (data_GT/ +
// boundary_GT/) and RITM's DAVIS/Berkeley (img/ + gt/). The first pair present is used.
std::vector<Instance> read_folder(const fs::path& dir, MaskConvention conv) {
  static const char* const kLayouts[][2] = {{"images", "masks"}, {"data_GT", "boundary_GT"}, {"img", "gt"}};
  fs::path images, masks;
  for (const auto& l : kLayouts) {
    std::error_code ec;
    if (fs::is_directory(dir / l[0], ec) && fs::is_directory(dir / l[1], ec)) {
      images = dir / l[0];
      masks = dir / l[1];
      break;
    }
  }
  if (images.empty())
    throw Error(dir.string() +
                ": expected a folder with images/ and masks/, data_GT/ and boundary_GT/, or img/ and gt/ (or a COCO JSON file)");
  std::map<std::string, fs::path> mask_by_stem;
  for (const auto& e : fs::directory_iterator(masks))
    if (e.is_regular_file() && is_image_file(e.path())) mask_by_stem[e.path().stem().string()] = e.path();
  std::vector<Instance> out;
  for (const auto& e : fs::directory_iterator(images)) {
    if (!e.is_regular_file() || !is_image_file(e.path())) continue;
    const std::string stem = e.path().stem().string();
    auto it = mask_by_stem.find(stem);
    if (it == mask_by_stem.end()) throw Error(e.path().string() + ": no mask " + stem + ".* in " + masks.string());
    Instance in;
    in.id = stem;
    in.image_path = e.path().string();
    in.mask_path = it->second.string();
    in.convention = conv;
    out.push_back(std::move(in));
  }
  if (out.empty()) throw Error(images.string() + ": no images");
  return out;
}

}  // namespace

std::vector<Instance> parse_coco(const std::string& text, const fs::path& json_path, const std::string& images_dir) {
  nlohmann::json j;
  try {
    j = read_json(text, json_path.string());
  } catch (const nlohmann::json::exception& e) {
    throw Error(json_path.string() + ": malformed JSON");
  }
  if (!j.is_object() || !j.contains("images") || !j.contains("annotations") || !j["images"].is_array() ||
      !j["annotations"].is_array())
    throw Error(json_path.string() + ": not a COCO instances file (needs \"images\" and \"annotations\" lists)");
  const fs::path base = images_dir.empty() ? json_path.parent_path() : fs::path(images_dir);
  struct Img {
    std::string file;
    int h, w;
  };
  // Ids are integers (COCO) or strings (the M2N2 reference's prepared files); a string id
  // becomes an instance id and a CSV field, so it is short and printable, without , or ".
  const auto id_of = [&](const nlohmann::json& v, const char* what) -> std::optional<std::string> {
    if (v.is_number_integer()) return std::to_string(v.get<long long>());
    if (!v.is_string()) return std::nullopt;
    const std::string& t = v.get_ref<const std::string&>();
    const bool ok = !t.empty() && t.size() <= 200 && std::none_of(t.begin(), t.end(), [](unsigned char c) {
      return c < 0x20 || c == 0x7f || c == ',' || c == '"';
    });
    if (!ok) throw Error(json_path.string() + ": " + what + " id must be 1-200 printable characters without , or \"");
    return t;
  };
  std::map<std::string, Img> imgs;
  for (const auto& im : j["images"]) {
    const auto id = im.is_object() && im.contains("id") ? id_of(im["id"], "image") : std::nullopt;
    if (!id || !im.contains("file_name") || !im["file_name"].is_string())
      throw Error(json_path.string() + ": image entries need an integer or string \"id\" and string \"file_name\"");
    for (const char* k : {"height", "width"})
      if (im.contains(k) && !im[k].is_number_integer())
        throw Error(json_path.string() + ": image height and width must be integers");
    const int h = im.value("height", 0), w = im.value("width", 0);
    imgs[*id] = {im["file_name"].get<std::string>(), h, w};
  }
  std::vector<Instance> out;
  for (const auto& a : j["annotations"]) {
    const auto id = a.is_object() && a.contains("id") ? id_of(a["id"], "annotation") : std::nullopt;
    const auto image_id = id && a.contains("image_id") ? id_of(a["image_id"], "image") : std::nullopt;
    if (!image_id || !a.contains("segmentation"))
      throw Error(json_path.string() +
                  ": annotations need an integer or string \"id\" and \"image_id\", and \"segmentation\"");
    auto it = imgs.find(*image_id);
    if (it == imgs.end()) throw Error(json_path.string() + ": annotation " + *id + " names an unknown image");
    Instance in;
    in.id = *id;
    in.image_path = (base / it->second.file).string();
    in.coco = a["segmentation"];
    in.coco_h = it->second.h;
    in.coco_w = it->second.w;
    out.push_back(std::move(in));
  }
  if (out.empty()) throw Error(json_path.string() + ": no annotations");
  return out;
}

std::vector<Instance> read_dataset(const std::string& dataset, const std::string& images, MaskConvention conv) {
  std::error_code ec;
  if (!fs::exists(dataset, ec)) throw Error(dataset + ": no such file or folder");
  std::vector<Instance> out = fs::is_directory(dataset, ec) ? read_folder(dataset, conv)
                                                           : parse_coco(read_file(dataset), dataset, images);
  std::sort(out.begin(), out.end(), [](const Instance& a, const Instance& b) {
    // numeric ids in numeric order, then lexicographic
    const auto digit = [](unsigned char c) { return std::isdigit(c) != 0; };
    if (a.id.size() != b.id.size() && std::all_of(a.id.begin(), a.id.end(), digit) &&
        std::all_of(b.id.begin(), b.id.end(), digit))
      return a.id.size() < b.id.size();
    return a.id < b.id;
  });
  for (size_t i = 1; i < out.size(); ++i)
    if (out[i].id == out[i - 1].id) throw Error(dataset + ": duplicate instance id " + out[i].id);
  return out;
}

std::vector<size_t> subset_indices(size_t n, size_t count, uint32_t seed) {
  // NumPy's legacy draw: RandomState(seed) is MT19937 initialised by init_genrand(seed)
  // (std::mt19937's own seeding); permutation(n) shuffles 0..n-1 from the back, each
  // swap index drawn by masked rejection of 32-bit outputs.
  std::vector<size_t> perm(n);
  for (size_t i = 0; i < n; ++i) perm[i] = i;
  std::mt19937 rng(seed);
  for (size_t i = n; i-- > 1;) {
    uint64_t mask = i;
    for (int s = 1; s < 64; s <<= 1) mask |= mask >> s;
    uint64_t j;
    do {
      j = (i <= 0xffffffffULL ? static_cast<uint64_t>(rng()) : (static_cast<uint64_t>(rng()) << 32) | rng()) & mask;
    } while (j > i);
    std::swap(perm[i], perm[j]);
  }
  perm.resize(std::min(count, n));
  return perm;
}

std::vector<Instance> select_subset(std::vector<Instance> all, size_t count, uint32_t seed) {
  if (count == 0 || count >= all.size()) return all;
  std::vector<size_t> pick = subset_indices(all.size(), count, seed);
  std::sort(pick.begin(), pick.end());  // evaluated in dataset order
  std::vector<Instance> out;
  out.reserve(pick.size());
  for (size_t i : pick) out.push_back(std::move(all[i]));
  return out;
}

std::vector<std::vector<Instance>> group_by_image(const std::vector<Instance>& instances) {
  std::vector<std::vector<Instance>> groups;
  std::map<std::string, size_t> index;
  for (const auto& in : instances) {
    auto it = index.find(in.image_path);
    if (it == index.end()) {
      it = index.emplace(in.image_path, groups.size()).first;
      groups.emplace_back();
    }
    groups[it->second].push_back(in);
  }
  return groups;
}

GroundTruth load_ground_truth(const Instance& in) {
  GroundTruth g;
  if (!in.coco.is_null()) {
    const auto& s = in.coco;
    int h = in.coco_h, w = in.coco_w;
    cv::Mat m;
    if (s.is_object()) {  // RLE
      if (!s.contains("size") || !s["size"].is_array() || s["size"].size() != 2 || !s["size"][0].is_number_integer() ||
          !s["size"][1].is_number_integer() || !s.contains("counts"))
        throw Error("annotation " + in.id + ": RLE needs \"size\" [h, w] and \"counts\"");
      h = s["size"][0].get<int>();
      w = s["size"][1].get<int>();
      if (h <= 0 || w <= 0 || static_cast<int64_t>(h) * w > 400000000LL) throw Error("annotation " + in.id + ": invalid RLE size");
      std::vector<uint32_t> counts;
      if (s["counts"].is_string()) counts = rle_from_string(s["counts"].get<std::string>());
      else if (s["counts"].is_array()) {
        for (const auto& c : s["counts"]) {
          if (!c.is_number_integer() || c.get<long long>() < 0 || c.get<long long>() > 0xffffffffLL)
            throw Error("annotation " + in.id + ": RLE counts must be non-negative integers");
          counts.push_back(static_cast<uint32_t>(c.get<long long>()));
        }
      } else {
        throw Error("annotation " + in.id + ": RLE counts must be a string or a list");
      }
      m = rle_decode(counts, h, w);
    } else if (s.is_array()) {  // polygons
      if (h <= 0 || w <= 0 || static_cast<int64_t>(h) * w > 400000000LL)
        throw Error("annotation " + in.id + ": polygons need the image's height and width in the COCO file");
      std::vector<std::vector<double>> polys;
      for (const auto& p : s) {
        if (!p.is_array()) throw Error("annotation " + in.id + ": polygon must be a list of numbers");
        std::vector<double> v;
        for (const auto& x : p) {
          if (!x.is_number()) throw Error("annotation " + in.id + ": polygon must be a list of numbers");
          v.push_back(x.get<double>());
        }
        polys.push_back(std::move(v));
      }
      try {
        m = polygons_to_mask(polys, h, w);
      } catch (const Error& e) {
        throw Error("annotation " + in.id + ": " + e.what());
      }
    } else {
      throw Error("annotation " + in.id + ": unsupported segmentation");
    }
    g.fg = m != 0;
    g.fg /= 255;
    g.void_mask = cv::Mat::zeros(m.size(), CV_8U);
    return g;
  }
  const LabelImage li = read_label_image(in.mask_path);
  if (li.palette) {  // by index, whatever the convention: 0 background, 255 void (VOC), others object
    g.fg = (li.values != 0) & (li.values != 255);
    g.fg /= 255;
    g.void_mask = (li.values == 255) / 255;
    return g;
  }
  cv::Mat m = read_mask(in.mask_path);
  if (in.convention == MaskConvention::Davis) {
    g.fg = (m > 0) / 255;
    g.void_mask = cv::Mat::zeros(m.size(), CV_8U);
  } else {
    g.fg = (m > 128) / 255;
    g.void_mask = (m == 128) / 255;
  }
  return g;
}

}  // namespace m2n2
