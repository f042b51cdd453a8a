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

 private:
  std::string dir_;
  int computed_ = 0, hits_ = 0;
  bool cleaned_ = false, warned_ = false;
  std::function<void(const std::string&)> warn_;
};

}  // namespace m2n2
