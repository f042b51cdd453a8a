// m2n2 — IEEE half precision (fp16) conversions: the cache's storage, .npy "<f2",
// and the CPU's fp16 Markov operator. Rounding is to nearest, ties to even; fp16
// subnormals are kept.
#pragma once
#include <cstddef>
#include <cstdint>

namespace m2n2 {

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

// The same over arrays, vectorised (OpenCV's conversion) and split over the worker
// threads: n floats to halves, and each float rounded to the nearest half in place.
void floats_to_halves(const float* in, uint16_t* out, size_t n);
void round_to_half(float* values, size_t n);

// floats_to_halves on the calling thread only, for use inside a parallel loop.
void floats_to_halves_serial(const float* in, uint16_t* out, size_t n);
// n halves widened to floats (exact), on the calling thread.
void halves_to_floats(const uint16_t* in, float* out, size_t n);

}  // namespace m2n2
