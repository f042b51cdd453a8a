#include "m2n2/attention/attention_file.hpp"

#include <cmath>
#include <filesystem>

#include "attention/sources.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/npy.hpp"

namespace m2n2 {

AttentionMap read_attention_npy(const std::string& path) { return attention_from_array(read_npy(path), path); }

AttentionMap attention_from_array(NpyArray a, const std::string& path) {
  if (a.dtype != "<f4" && a.dtype != "<f2" && a.dtype != "|f4" && a.dtype != "|f2")
    throw Error(path + ": attention must be float32 or float16, got dtype '" + a.dtype + "'");
  AttentionMap m;
  m.name = path;  // errors about the map (e.g. the operator's) then name the file
  if (a.shape.size() == 4) {
    if (a.shape[0] != a.shape[2] || a.shape[1] != a.shape[3])
      throw Error(path + ": attention of shape (h,w,h,w) expected, got (" + std::to_string(a.shape[0]) + "," +
                  std::to_string(a.shape[1]) + "," + std::to_string(a.shape[2]) + "," + std::to_string(a.shape[3]) + ")");
    m.h = static_cast<int>(a.shape[0]);
    m.w = static_cast<int>(a.shape[1]);
  } else if (a.shape.size() == 2) {
    if (a.shape[0] != a.shape[1]) throw Error(path + ": attention of shape (N,N) must be square");
    const int64_t s = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(a.shape[0]))));
    if (s * s != a.shape[0]) throw Error(path + ": N = " + std::to_string(a.shape[0]) + " is not a square number of tokens");
    m.h = m.w = static_cast<int>(s);
  } else {
    throw Error(path + ": attention must have shape (h,w,h,w) or (N,N), got " + std::to_string(a.shape.size()) + " dimensions");
  }
  if (m.h <= 0 || m.w <= 0) throw Error(path + ": empty attention tensor");
  m.data = std::move(a.data);
  validate_attention(m, path, a.dtype.find("f2") != std::string::npos ? 2e-2f : 1e-3f);
  return m;
}

void write_attention_npy(const std::string& path, const AttentionMap& map, bool fp16) {
  AttentionMap host;  // a device map comes to the host for writing
  if (!map.on_host()) {
    host = map;
    to_host(host);
  }
  const AttentionMap& m = map.on_host() ? map : host;
  write_npy(path, m.data.data(), {m.h, m.w, m.h, m.w}, fp16 ? NpyDtype::Float16 : NpyDtype::Float32);
}

namespace detail {
namespace {
class FileSource : public AttentionSource {
 public:
  // Read and validated up front: a bad file is an error in the arguments.
  explicit FileSource(std::string path) : path_(std::move(path)) {
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) throw Error(path_ + ": no such file");
    if (std::filesystem::is_directory(path_, ec)) throw Error(path_ + ": is a directory, expected a .npy file");
    map_ = read_attention_npy(path_);
  }
  std::string id() const override { return "file:" + path_; }
  // The first call hands over the map read up front (no copy of N×N values); later
  // calls read the file again.
  Attention compute(const cv::Mat&) override {
    Attention a;
    if (map_.data.empty()) map_ = read_attention_npy(path_);
    a.maps.push_back(std::move(map_));
    map_ = AttentionMap();
    a.meta["source"] = id();
    return a;
  }

 private:
  std::string path_;
  AttentionMap map_;
};
}  // namespace

std::unique_ptr<AttentionSource> make_file_source(const std::string& path, const SourceOptions&) {
  return std::make_unique<FileSource>(path);
}
}  // namespace detail
}  // namespace m2n2
