#include "m2n2/attention/attention_cache.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "attention/sources.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/io/npy.hpp"

namespace m2n2 {
namespace fs = std::filesystem;

void round_to_fp16(Attention& att) {
  for (auto& m : att.maps) {
    if (!m.on_host()) {
      detail::round_device_to_fp16(m);
      continue;
    }
    for (auto& v : m.data) v = half_to_float(float_to_half(v));
  }
}

AttentionCache::AttentionCache(std::string dir) : dir_(std::move(dir)) {}

std::string AttentionCache::default_dir() {
  if (const char* x = std::getenv("M2N2_CACHE_DIR")) return x;
  if (const char* x = std::getenv("XDG_CACHE_HOME")) return std::string(x) + "/m2n2";
  if (const char* h = std::getenv("HOME")) return std::string(h) + "/.cache/m2n2";
  return ".m2n2-cache";
}

int AttentionCache::remove_stale(double min_age_seconds) {
  cleaned_ = true;
  if (dir_.empty()) return 0;
  std::error_code ec;
  fs::directory_iterator it(dir_, ec), end;
  if (ec) return 0;
  const auto now = fs::file_time_type::clock::now();
  int removed = 0;
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    const fs::path p = it->path();
    const std::string name = p.filename().string();
    bool stale = false;
    if (name.size() > 1 && name[0] == '.' && name.find(".tmp") != std::string::npos) {
      stale = true;  // a temporary of write_file_atomic
    } else if (p.extension() == ".npy") {
      const auto us = name.rfind('_');  // KEY_i.npy belongs to KEY.txt
      stale = us != std::string::npos && !fs::exists(fs::path(dir_) / (name.substr(0, us) + ".txt"), ec);
    }
    if (!stale) continue;
    const auto mtime = fs::last_write_time(p, ec);
    if (ec || std::chrono::duration<double>(now - mtime).count() < min_age_seconds) continue;
    if (fs::remove(p, ec)) ++removed;
  }
  return removed;
}

namespace {
std::string hash_string(const std::string& s) {
  cv::Mat m(1, static_cast<int>(s.size()), CV_8U, const_cast<char*>(s.data()));
  return content_hash(m);
}
}  // namespace

Attention AttentionCache::get(AttentionSource& source, const cv::Mat& rgb) {
  const std::string id = source.id();
  if (id.rfind("file:", 0) == 0) return source.compute(rgb);
  const std::string key = content_hash(rgb) + "-" + hash_string(id);
  const fs::path index = fs::path(dir_) / (key + ".txt");
  std::error_code ec;
  if (!dir_.empty() && fs::exists(index, ec)) {
    try {
      std::istringstream in(read_file(index.string()));
      std::string line;
      std::getline(in, line);
      if (line != id) throw Error("key collision");
      Attention a;
      std::string name;
      int h, w, i = 0;
      float weight;
      while (in >> name >> h >> w >> weight) {
        NpyArray arr = read_npy((fs::path(dir_) / (key + "_" + std::to_string(i++) + ".npy")).string());
        AttentionMap m;
        m.name = name;
        m.h = h;
        m.w = w;
        m.weight = weight;
        if (arr.size() != static_cast<int64_t>(h) * w * h * w) throw Error("size mismatch");
        m.data = std::move(arr.data);
        a.maps.push_back(std::move(m));
      }
      if (a.maps.empty()) throw Error("empty entry");
      a.meta["source"] = id;
      a.meta["cache"] = "hit";
      ++hits_;
      return a;
    } catch (const Error&) {
      // A damaged entry is recomputed below.
    }
  }
  Attention a = source.compute(rgb);
  ++computed_;
  round_to_fp16(a);
  if (!dir_.empty()) {
    if (!cleaned_) remove_stale();
    try {
      fs::create_directories(dir_, ec);
      if (ec) throw Error(dir_ + ": " + ec.message());
      std::ostringstream idx;
      idx << id << "\n";
      for (size_t i = 0; i < a.maps.size(); ++i) {
        AttentionMap host;  // a device map is copied over for writing, one layer at a time
        if (!a.maps[i].on_host()) {
          host = a.maps[i];
          to_host(host);
        }
        const auto& m = a.maps[i].on_host() ? a.maps[i] : host;
        write_npy((fs::path(dir_) / (key + "_" + std::to_string(i) + ".npy")).string(), m.data.data(),
                  {m.h, m.w, m.h, m.w}, NpyDtype::Float16);
        std::string name = m.name;
        for (auto& c : name)
          if (c == ' ') c = '_';
        idx << name << " " << m.h << " " << m.w << " " << m.weight << "\n";
      }
      write_file_atomic(index.string(), idx.str());  // written last: marks the entry complete
    } catch (const Error& e) {
      // An unwritable cache never fails the computation; it is said once.
      if (!warned_ && warn_) warn_(std::string("attention cache not written (") + e.what() + "); going on without it");
      warned_ = true;
    }
  }
  return a;
}

}  // namespace m2n2
