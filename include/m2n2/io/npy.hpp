// m2n2 — NumPy .npy reading and writing (no LibTorch).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

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

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
// The same over arrays, vectorised (OpenCV's conversion; round to nearest even, as
// float_to_half): n floats to halves, and each float rounded to the nearest half in place.
void floats_to_halves(const float* in, uint16_t* out, size_t n);
void round_to_half(float* values, size_t n);

// Writes `bytes` to `path` through a temporary file in the same folder and a rename,
// so that readers never see a half-written file.
void write_file_atomic(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

}  // namespace m2n2
