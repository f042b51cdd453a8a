// m2n2 — decoding an image held in memory (an upload) exactly as read_rgb decodes a file.
#pragma once
#include <cstdint>
#include <string>

#include "m2n2/io/image_io.hpp"

namespace m2n2 {

// The bytes of an image file decoded and converted as read_rgb converts a file (same
// checks, same 8-bit RGB); `name` labels the errors ("name: problem").
LoadedImage decode_rgb(const std::string& name, const std::string& bytes, int64_t max_pixels);

}  // namespace m2n2
