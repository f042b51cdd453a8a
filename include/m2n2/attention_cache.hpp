// m2n2 — on-disk cache of computed attention, keyed by image content, source and
// settings. Entries are float16 .npy files plus a JSON index written last.
#pragma once
#include <memory>
#include <string>

#include "m2n2/attention.hpp"

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

 private:
  std::string dir_;
  int computed_ = 0, hits_ = 0;
};

}  // namespace m2n2
