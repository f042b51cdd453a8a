// m2n2 — NumPy .npy reading and writing (no LibTorch).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "m2n2/core/half.hpp"  // fp16 conversions, used for "<f2"

namespace m2n2 {

// A numeric array read from .npy, converted to float32 (C order).
struct NpyArray {
  std::vector<int64_t> shape;
  std::string dtype;  // the file's descr, e.g. "<f4", "<f2"
  std::vector<float> data;
  int64_t size() const;
};

// Parses .npy bytes. `name` is used in error messages. Accepts float16/32/64,
// (u)int8/16/32/64 and bool, little endian, C order, format versions 1–3.
NpyArray parse_npy(const std::string& bytes, const std::string& name);
NpyArray read_npy(const std::string& path);

enum class NpyDtype { Float32, Float16 };
// Serialises C-order float data; Float16 rounds to nearest even.
std::string encode_npy(const float* data, const std::vector<int64_t>& shape,
                       NpyDtype dtype = NpyDtype::Float32);
// Writes atomically (temporary file, then rename).
void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape,
               NpyDtype dtype = NpyDtype::Float32);

// Writes `bytes` to `path` through a temporary file in the same folder and a rename,
// so that readers never see a half-written file.
void write_file_atomic(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

}  // namespace m2n2
