// m2n2 — on-disk cache of computed attention, keyed by image content, source and
// settings. Entries are float16 .npy files plus a JSON index written last.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "m2n2/attention/attention.hpp"

namespace m2n2 {

// Computed attention is always rounded to float16 (the cache's dtype), whether the
// cache is on or off, so a hit returns exactly what a fresh computation gives.
void round_to_fp16(Attention& att);

class AttentionCache {
 public:
  // dir empty = no cache (attention still rounded for consistency).
  explicit AttentionCache(std::string dir);
  // Returns the attention of `rgb` from `source`, computing it on a miss.
  // `file:` sources are passed through unchanged and never cached.
  Attention get(AttentionSource& source, const cv::Mat& rgb);
  // The entry name of an image's attention from a source (image content + source id).
  static std::string key(const AttentionSource& source, const cv::Mat& rgb);
  int computed() const { return computed_; }
  int hits() const { return hits_; }
  const std::string& dir() const { return dir_; }
  static std::string default_dir();
  // Receives one warning the first time an entry cannot be written (the computation
  // goes on uncached); the core never prints.
  void set_warn(std::function<void(const std::string&)> warn) { warn_ = std::move(warn); }
  // Removes what killed writers left: temporaries (".NAME.tmpN") and maps of entries
  // whose index (written last) never appeared, if older than `min_age_seconds` (so
  // that a writer still at work in another process is left alone). Returns the count.
  // Runs once by itself before the first write of this cache object.
  int remove_stale(double min_age_seconds = 3600);

  // Size cap in bytes (0 = none). After each write the least recently used entries
  // (by the time of their last hit or write) are removed until the cache fits; the
  // entry just written or read is never removed. An entry larger than the cap alone
  // is not written (said once through the warning).
  void set_max_bytes(double bytes) { max_bytes_ = bytes; }
  double max_bytes() const { return max_bytes_; }

  struct Stats {
    int entries = 0;
    double bytes = 0;        // of complete entries (index + maps)
    int stale_files = 0;     // temporaries and maps without an index
    double stale_bytes = 0;
    double oldest_use = 0, newest_use = 0;  // seconds since the epoch (0 when empty)
  };
  Stats stats() const;
  // Removes entries, least recently used first, until at most `max_bytes` remain,
  // keeping `keep` (a key; "" = none). Returns the number of entries removed.
  int evict(double max_bytes, const std::string& keep = "");
  // Removes every entry and every stale file. Returns the number of files removed.
  int clear();

 private:
  std::string dir_;
  double max_bytes_ = 0;
  int computed_ = 0, hits_ = 0;
  bool cleaned_ = false, warned_ = false;
  void warn_once(const std::string& message);
  std::function<void(const std::string&)> warn_;
};

}  // namespace m2n2
