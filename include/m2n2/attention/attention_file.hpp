// m2n2 — attention tensors stored as .npy files (the `file:` source and the cache).
#pragma once
#include <string>

#include "m2n2/attention/attention.hpp"

namespace m2n2 {

// Reads float32/float16 (h,w,h,w) or (N,N) with N a square, and validates it.
AttentionMap read_attention_npy(const std::string& path);
// Writes (h,w,h,w) float32 (or float16).
void write_attention_npy(const std::string& path, const AttentionMap& m, bool fp16 = false);

}  // namespace m2n2
