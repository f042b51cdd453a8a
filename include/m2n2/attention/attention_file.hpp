// m2n2 — attention tensors stored as .npy files (the `file:` source and the cache).
#pragma once
#include <string>

#include "m2n2/attention/attention.hpp"
#include "m2n2/io/npy.hpp"

namespace m2n2 {

// Reads float32/float16 (h,w,h,w) or (N,N) with N a square, and validates it.
AttentionMap read_attention_npy(const std::string& path);
// The same checks for an array from elsewhere (e.g. a NumPy array handed to the Python
// module); `name` starts every error message and names the map.
AttentionMap attention_from_array(NpyArray a, const std::string& name);
// Writes (h,w,h,w) float32 (or float16).
void write_attention_npy(const std::string& path, const AttentionMap& m, bool fp16 = false);

}  // namespace m2n2
