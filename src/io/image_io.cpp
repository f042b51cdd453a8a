#include "m2n2/io/image_io.hpp"
#include "m2n2/io/image_decode.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "m2n2/core/error.hpp"
#include "m2n2/io/npy.hpp"

namespace m2n2 {
namespace fs = std::filesystem;

namespace {

uint32_t be32(const std::string& b, size_t i) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(b[i])) << 24) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[i + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[i + 2])) << 8) | static_cast<unsigned char>(b[i + 3]);
}

}  // namespace

// Structural checks of PNG and JPEG files before decoding, so that truncated files
// get our one-line error instead of the codec libraries' own stderr messages.
void check_image_bytes(const std::string& path, const std::string& b, int64_t max_pixels) {
  if (b.size() >= 8 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) {
    if (b.size() >= 24 && b.compare(12, 4, "IHDR") == 0) {
      const int64_t w = be32(b, 16), h = be32(b, 20);
      if (w == 0 || h == 0) throw Error(path + ": zero-size image (" + std::to_string(w) + "x" + std::to_string(h) + ")");
      // Each side alone is below 2^32; compare without forming a product that can overflow.
      if (w > max_pixels || h > max_pixels || w > max_pixels / h)
        throw Error(path + ": image of " + std::to_string(w) + "x" + std::to_string(h) + " is too large");
    }
    size_t i = 8;
    bool iend = false;
    while (i + 12 <= b.size()) {
      const uint32_t len = be32(b, i);
      const std::string type = b.substr(i + 4, 4);
      if (len > b.size() || i + 12 + len > b.size()) break;
      i += 12 + len;
      if (type == "IEND") {
        iend = true;
        break;
      }
    }
    if (!iend) throw Error(path + ": truncated or corrupt PNG");
  } else if (b.size() >= 3 && static_cast<unsigned char>(b[0]) == 0xFF && static_cast<unsigned char>(b[1]) == 0xD8) {
    // The end-of-image marker must be near the end (some files carry trailing bytes).
    const size_t from = b.size() > 4096 ? b.size() - 4096 : 2;
    bool eoi = false;
    for (size_t i = b.size() - 1; i > from && !eoi; --i)
      eoi = static_cast<unsigned char>(b[i - 1]) == 0xFF && static_cast<unsigned char>(b[i]) == 0xD9;
    if (!eoi) throw Error(path + ": truncated or corrupt JPEG");
  }
}

namespace {
cv::Mat decode_bytes(const std::string& path, const std::string& bytes, int flags, int64_t max_pixels) {
  if (bytes.empty()) throw Error(path + ": empty file");
  check_image_bytes(path, bytes, max_pixels);
  cv::Mat img;
  try {
    img = cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data())), flags);
  } catch (const cv::Exception& e) {
    throw Error(path + ": cannot decode image");
  }
  if (img.empty()) throw Error(path + ": cannot decode image (corrupt or unsupported format)");
  return img;
}

cv::Mat decode(const std::string& path, int flags, int64_t max_pixels = 400000000) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": no such file");
  if (fs::is_directory(path, ec)) throw Error(path + ": is a directory, expected an image");
  return decode_bytes(path, read_file(path), flags, max_pixels);
}

// read_rgb's conversion of a decoded image (any depth, 1/3/4 channels) to 8-bit RGB.
LoadedImage to_rgb(const std::string& path, cv::Mat img, int64_t max_pixels) {
  if (static_cast<int64_t>(img.rows) * img.cols > max_pixels)
    throw Error(path + ": image of " + std::to_string(img.cols) + "x" + std::to_string(img.rows) + " is too large");
  LoadedImage out;
  std::string note;
  if (img.depth() == CV_16U) {
    img.convertTo(img, CV_8U, 1.0 / 257.0);
    note += "16-bit converted to 8-bit; ";
  } else if (img.depth() == CV_32F) {
    img.convertTo(img, CV_8U, 255.0);
    note += "float converted to 8-bit; ";
  } else if (img.depth() != CV_8U) {
    img.convertTo(img, CV_8U);
    note += "converted to 8-bit; ";
  }
  switch (img.channels()) {
    case 1:
      cv::cvtColor(img, out.rgb, cv::COLOR_GRAY2RGB);
      note += "grayscale converted to RGB";
      break;
    case 3:
      cv::cvtColor(img, out.rgb, cv::COLOR_BGR2RGB);
      break;
    case 4:
      cv::cvtColor(img, out.rgb, cv::COLOR_BGRA2RGB);
      note += "alpha channel dropped";
      break;
    default:
      throw Error(path + ": unsupported number of channels (" + std::to_string(img.channels()) + ")");
  }
  out.note = note;
  return out;
}
}  // namespace

LoadedImage read_rgb(const std::string& path, int64_t max_pixels) {
  return to_rgb(path, decode(path, cv::IMREAD_UNCHANGED | cv::IMREAD_IGNORE_ORIENTATION, max_pixels), max_pixels);
}

LoadedImage decode_rgb(const std::string& name, const std::string& bytes, int64_t max_pixels) {
  return to_rgb(name, decode_bytes(name, bytes, cv::IMREAD_UNCHANGED | cv::IMREAD_IGNORE_ORIENTATION, max_pixels), max_pixels);
}

cv::Mat read_mask(const std::string& path) {
  cv::Mat img = decode(path, cv::IMREAD_UNCHANGED);
  if (img.channels() > 1) {
    std::vector<cv::Mat> ch;
    cv::split(img, ch);
    img = ch[0];
  }
  if (img.depth() == CV_16U) img.convertTo(img, CV_8U, 1.0 / 257.0);
  else if (img.depth() != CV_8U) img.convertTo(img, CV_8U);
  return img;
}

std::string encode_png(const cv::Mat& img) {
  std::vector<uint8_t> buf;
  cv::Mat bgr = img;
  if (img.channels() == 3) cv::cvtColor(img, bgr, cv::COLOR_RGB2BGR);
  if (!cv::imencode(".png", bgr, buf)) throw Error("cannot encode PNG");
  return std::string(buf.begin(), buf.end());
}

void write_png_atomic(const std::string& path, const cv::Mat& img) { write_file_atomic(path, encode_png(img)); }

std::string content_hash(const cv::Mat& m) {
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 1099511628211ULL;
    }
  };
  const int dims[3] = {m.rows, m.cols, m.type()};
  mix(dims, sizeof dims);
  for (int y = 0; y < m.rows; ++y) mix(m.ptr(y), m.cols * m.elemSize());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::vector<std::string> list_files(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw InvalidArgument(dir + ": not a folder");
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.is_regular_file()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace m2n2
