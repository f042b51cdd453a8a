#include "m2n2/attention/attention_cache.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
#include <vector>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "attention/sources.hpp"
#include "libtorch/backend.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/core/half.hpp"
#include "m2n2/io/image_io.hpp"
#include "m2n2/io/npy.hpp"

namespace m2n2 {
namespace fs = std::filesystem;

void round_to_fp16(Attention& att) {
  for (auto& m : att.maps) {
    if (!m.on_host()) {
      detail::torch_backend().round_to_fp16(m);
      continue;
    }
    round_to_half(m.data.data(), m.data.size());
  }
  for (auto& f : att.features) round_to_half(f.data.data(), f.data.size());
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
// "<16 hex>-<16 hex>": the keys this cache writes (other files in the folder are not ours).
bool is_key(const std::string& k) {
  if (k.size() != 33 || k[16] != '-') return false;
  for (size_t i = 0; i < k.size(); ++i)
    if (i != 16 && !std::isxdigit(static_cast<unsigned char>(k[i]))) return false;
  return true;
}

// file_time_type's clock has no portable epoch in C++17: times are measured from one "now".
double seconds_since_epoch(fs::file_time_type t, fs::file_time_type now_file, std::chrono::system_clock::time_point now) {
  return std::chrono::duration<double>(now.time_since_epoch()).count() -
         std::chrono::duration<double>(now_file - t).count();
}

struct Entry {
  std::string key;
  double bytes = 0;
  fs::file_time_type used;  // the index's modification time: last write or hit
  std::vector<fs::path> files;  // index first
};

// The folder's complete entries, and its stale files (temporaries, maps without index).
std::vector<Entry> scan(const std::string& dir, std::vector<std::pair<fs::path, double>>* stale) {
  std::map<std::string, Entry> entries;
  std::vector<std::pair<fs::path, double>> maps;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const fs::path p = it->path();
    const std::string name = p.filename().string();
    std::error_code e2;
    const double size = static_cast<double>(fs::file_size(p, e2));
    if (e2) continue;
    if (name.size() > 1 && name[0] == '.' && name.find(".tmp") != std::string::npos) {
      if (stale) stale->emplace_back(p, size);
    } else if (p.extension() == ".txt" && is_key(p.stem().string())) {
      Entry& e = entries[p.stem().string()];
      e.key = p.stem().string();
      e.bytes += size;
      e.used = fs::last_write_time(p, e2);
      e.files.insert(e.files.begin(), p);
    } else if (p.extension() == ".npy" && name.size() > 34 && is_key(name.substr(0, 33)) && name[33] == '_') {
      maps.emplace_back(p, size);
    }
  }
  for (const auto& [p, size] : maps) {
    auto f = entries.find(p.filename().string().substr(0, 33));
    if (f == entries.end()) {
      if (stale) stale->emplace_back(p, size);
    } else {
      f->second.bytes += size;
      f->second.files.push_back(p);
    }
  }
  std::vector<Entry> out;
  for (auto& [k, e] : entries) out.push_back(std::move(e));
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.used < b.used; });  // LRU first
  return out;
}
}  // namespace

AttentionCache::Stats AttentionCache::stats() const {
  Stats st;
  if (dir_.empty()) return st;
  std::vector<std::pair<fs::path, double>> stale;
  const auto entries = scan(dir_, &stale);
  st.entries = static_cast<int>(entries.size());
  for (const auto& e : entries) st.bytes += e.bytes;
  st.stale_files = static_cast<int>(stale.size());
  for (const auto& f : stale) st.stale_bytes += f.second;
  if (!entries.empty()) {
    const auto now_file = fs::file_time_type::clock::now();
    const auto now = std::chrono::system_clock::now();
    st.oldest_use = seconds_since_epoch(entries.front().used, now_file, now);
    st.newest_use = seconds_since_epoch(entries.back().used, now_file, now);
  }
  return st;
}

int AttentionCache::evict(double max_bytes, const std::string& keep) {
  if (dir_.empty()) return 0;
  auto entries = scan(dir_, nullptr);
  double total = 0;
  for (const auto& e : entries) total += e.bytes;
  int removed = 0;
  std::error_code ec;
  for (const auto& e : entries) {  // least recently used first
    if (total <= max_bytes) break;
    if (e.key == keep) continue;
    // The index goes first: a reader in another process then sees a miss, never a
    // half-removed entry (one that already read the index and loses a map recomputes).
    for (const auto& f : e.files) fs::remove(f, ec);
    total -= e.bytes;
    ++removed;
  }
  return removed;
}

int AttentionCache::clear() {
  if (dir_.empty()) return 0;
  std::vector<std::pair<fs::path, double>> stale;
  int removed = 0;
  std::error_code ec;
  for (const auto& e : scan(dir_, &stale))
    for (const auto& f : e.files) removed += fs::remove(f, ec) ? 1 : 0;
  for (const auto& f : stale) removed += fs::remove(f.first, ec) ? 1 : 0;
  return removed;
}

void AttentionCache::warn_once(const std::string& message) {
  if (!warned_ && warn_) warn_(message);
  warned_ = true;
}

std::string AttentionCache::key(const AttentionSource& source, const cv::Mat& rgb) {
  return content_hash(rgb) + "-" + hash_string(source.id());
}

Attention AttentionCache::get(AttentionSource& source, const cv::Mat& rgb) {
  const std::string id = source.id();
  if (id.rfind("file:", 0) == 0) return source.compute(rgb);
  const std::string key = AttentionCache::key(source, rgb);
  const fs::path index = fs::path(dir_) / (key + ".txt");
  std::error_code ec;
  // Only regular files are read (a FIFO or device planted in the folder would block or
  // stream forever); every map is checked as a source's output is (shape, finite values,
  // rows summing to 1 within fp16 rounding). A bad entry is a miss: recomputed, rewritten.
  const auto regular = [](const fs::path& p) {
    std::error_code e;
    if (!fs::is_regular_file(p, e)) throw Error(p.filename().string() + " is not a regular file");
    return p.string();
  };
  if (!dir_.empty() && fs::exists(fs::symlink_status(index, ec))) {
    try {
      std::istringstream in(read_file(regular(index)));
      std::string line;
      std::getline(in, line);
      if (line != id) throw Error("key collision");
      Attention a;
      int i = 0, fi = 0;
      while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string name;
        if (!(fields >> name)) continue;
        if (name == "@feature") {  // "@feature NAME KIND LAYER H W DIM" -> KEY_fI.npy
          FeatureMap f;
          if (!(fields >> f.name >> f.kind >> f.layer >> f.h >> f.w >> f.dim)) throw Error("bad feature line");
          NpyArray arr = read_npy(regular(fs::path(dir_) / (key + "_f" + std::to_string(fi++) + ".npy")));
          if (arr.shape != std::vector<int64_t>{f.rows(), static_cast<int64_t>(f.dim)}) throw Error("feature shape mismatch");
          f.data = std::move(arr.data);
          validate_feature(f, "cache");
          a.features.push_back(std::move(f));
          continue;
        }
        int h, w;
        float weight;
        if (!(fields >> h >> w >> weight)) throw Error("bad map line");
        NpyArray arr = read_npy(regular(fs::path(dir_) / (key + "_" + std::to_string(i++) + ".npy")));
        AttentionMap m;
        m.name = name;
        m.h = h;
        m.w = w;
        m.weight = weight;
        if (h <= 0 || w <= 0 || arr.shape != std::vector<int64_t>{h, w, h, w})
          throw Error("map shape does not match its " + std::to_string(h) + "x" + std::to_string(w) + " grid");
        m.data = std::move(arr.data);
        validate_attention(m, "map " + std::to_string(i - 1), 2e-2f);
        a.maps.push_back(std::move(m));
      }
      if (a.maps.empty()) throw Error("empty entry");
      a.meta["source"] = id;
      a.meta["cache"] = "hit";
      ++hits_;
      fs::last_write_time(index, fs::file_time_type::clock::now(), ec);  // recency for the size cap
      return a;
    } catch (const Error& e) {
      if (warn_)
        warn_("attention cache entry " + key + " is damaged (" + one_line_message(e) + "); recomputing and rewriting it");
    }
  }
  Attention a = source.compute(rgb);
  ++computed_;
  round_to_fp16(a);
  double entry_bytes = 0;
  for (const auto& m : a.maps) entry_bytes += 2.0 * static_cast<double>(attention_values(m)) + 128;
  for (const auto& f : a.features) entry_bytes += 2.0 * static_cast<double>(f.data.size()) + 128;
  if (!dir_.empty() && max_bytes_ > 0 && entry_bytes > max_bytes_) {
    warn_once("attention of " + std::to_string(static_cast<long long>(entry_bytes / 1048576)) +
              " MiB per image is larger than the cache's size cap (--cache-max-size); not cached");
  } else if (!dir_.empty()) {
    if (!cleaned_) remove_stale();
    try {
      // Attention reveals the images: the folder is made 0700 and entries 0600.
      if (fs::create_directories(dir_, ec)) fs::permissions(dir_, fs::perms::owner_all, ec);
      if (ec) throw Error(dir_ + ": " + ec.message());
      const auto owner_only = [](const fs::path& p) {
        std::error_code e;
        fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write, e);
      };
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
        owner_only(fs::path(dir_) / (key + "_" + std::to_string(i) + ".npy"));
        std::string name = m.name;
        for (auto& c : name)
          if (c == ' ') c = '_';
        idx << name << " " << m.h << " " << m.w << " " << m.weight << "\n";
      }
      for (size_t i = 0; i < a.features.size(); ++i) {  // fp16, like the maps
        const FeatureMap& f = a.features[i];
        write_npy((fs::path(dir_) / (key + "_f" + std::to_string(i) + ".npy")).string(), f.data.data(),
                  {f.rows(), static_cast<int64_t>(f.dim)}, NpyDtype::Float16);
        owner_only(fs::path(dir_) / (key + "_f" + std::to_string(i) + ".npy"));
        std::string name = f.name;
        for (auto& c : name)
          if (c == ' ') c = '_';
        idx << "@feature " << name << " " << f.kind << " " << f.layer << " " << f.h << " " << f.w << " " << f.dim << "\n";
      }
      write_file_atomic(index.string(), idx.str());  // written last: marks the entry complete
      owner_only(index);
      if (max_bytes_ > 0) evict(max_bytes_, key);
    } catch (const Error& e) {
      // An unwritable cache never fails the computation; it is said once.
      warn_once(std::string("attention cache not written (") + e.what() + "); going on without it");
    }
  }
  return a;
}

}  // namespace m2n2
