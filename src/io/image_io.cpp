#include "m2n2/io/image_io.hpp"
#include "core/check.hpp"
#include "m2n2/io/image_decode.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <spng.h>
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
std::string checked_bytes(const std::string& path, int64_t max_pixels) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": no such file");
  if (fs::is_directory(path, ec)) throw Error(path + ": is a directory, expected an image");
  std::string bytes = read_file(path);
  if (bytes.empty()) throw Error(path + ": empty file");
  check_image_bytes(path, bytes, max_pixels);
  return bytes;
}

cv::Mat decode_bytes(const std::string& path, const std::string& bytes, int flags) {
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
  return decode_bytes(path, checked_bytes(path, max_pixels), flags);
}

bool is_jpeg(const std::string& b) {
  return b.size() >= 3 && static_cast<unsigned char>(b[0]) == 0xFF && static_cast<unsigned char>(b[1]) == 0xD8;
}

// PNG colour type 3 (indexed), from IHDR (check_image_bytes has seen the signature).
bool is_palette_png(const std::string& b) {
  return b.size() >= 26 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0 && b.compare(12, 4, "IHDR") == 0 &&
         static_cast<unsigned char>(b[25]) == 3;
}

// The palette indices of an indexed PNG, decoded by libspng (CV_32S).
cv::Mat decode_palette_indices(const std::string& path, const std::string& bytes) {
  std::unique_ptr<spng_ctx, void (*)(spng_ctx*)> ctx(spng_ctx_new(0), spng_ctx_free);
  if (!ctx) throw Error(path + ": out of memory");
  auto fail = [&](int rc) { return Error(path + ": cannot decode palette PNG (" + spng_strerror(rc) + ")"); };
  int rc = spng_set_image_limits(ctx.get(), 1u << 20, 1u << 20);
  if (!rc) rc = spng_set_chunk_limits(ctx.get(), 64u << 20, 64u << 20);
  if (!rc) rc = spng_set_png_buffer(ctx.get(), bytes.data(), bytes.size());
  spng_ihdr ihdr{};
  if (!rc) rc = spng_get_ihdr(ctx.get(), &ihdr);
  size_t n = 0;
  if (!rc) rc = spng_decoded_image_size(ctx.get(), SPNG_FMT_PNG, &n);
  if (rc) throw fail(rc);
  const int bd = ihdr.bit_depth, w = static_cast<int>(ihdr.width), h = static_cast<int>(ihdr.height);
  const size_t stride = (static_cast<size_t>(w) * bd + 7) / 8;
  if (bd < 1 || bd > 8 || n != stride * static_cast<size_t>(h)) throw Error(path + ": unexpected palette PNG layout");
  std::vector<unsigned char> buf(n);
  rc = spng_decode_image(ctx.get(), buf.data(), n, SPNG_FMT_PNG, 0);
  if (rc) throw fail(rc);
  cv::Mat out(h, w, CV_32S);
  const int mask = (1 << bd) - 1;
  for (int y = 0; y < h; ++y) {
    const unsigned char* row = buf.data() + static_cast<size_t>(y) * stride;
    int* o = out.ptr<int>(y);
    for (int x = 0; x < w; ++x) {  // samples of under 8 bits are packed, most significant first
      const size_t bit = static_cast<size_t>(x) * bd;
      o[x] = (row[bit / 8] >> (8 - bd - static_cast<int>(bit % 8))) & mask;
    }
  }
  return out;
}

std::atomic<ExifOrientation> g_exif{ExifOrientation::Apply};
}  // namespace

void set_exif_orientation(ExifOrientation mode) { g_exif = mode; }
ExifOrientation exif_orientation() { return g_exif; }
ExifOrientation parse_exif_orientation(const std::string& s) {
  if (s == "apply") return ExifOrientation::Apply;
  if (s == "ignore") return ExifOrientation::Ignore;
  check::not_one_of("exif", s, {"apply", "ignore"});
}

LoadedImage read_rgb(const std::string& path, int64_t max_pixels) { return read_rgb(path, max_pixels, g_exif); }

namespace {
// The flags that decode an image's bytes as read_rgb shows it: a JPEG's EXIF orientation is
// applied as browsers and cv::imread show the photo (OpenCV applies it for any flags but
// IMREAD_UNCHANGED); --exif ignore keeps the stored pixel grid. JPEG samples are 8-bit, one
// or three channels.
int rgb_flags(const std::string& bytes, ExifOrientation exif) {
  return !is_jpeg(bytes)                    ? cv::IMREAD_UNCHANGED | cv::IMREAD_IGNORE_ORIENTATION
         : exif == ExifOrientation::Apply ? cv::IMREAD_ANYCOLOR
                                          : cv::IMREAD_ANYCOLOR | cv::IMREAD_IGNORE_ORIENTATION;
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

LoadedImage read_rgb(const std::string& path, int64_t max_pixels, ExifOrientation exif) {
  const std::string bytes = checked_bytes(path, max_pixels);
  return to_rgb(path, decode_bytes(path, bytes, rgb_flags(bytes, exif)), max_pixels);
}

LoadedImage decode_rgb(const std::string& name, const std::string& bytes, int64_t max_pixels) {
  if (bytes.empty()) throw Error(name + ": empty file");
  check_image_bytes(name, bytes, max_pixels);
  return to_rgb(name, decode_bytes(name, bytes, rgb_flags(bytes, g_exif)), max_pixels);
}

LabelImage read_label_image(const std::string& path) {
  const std::string bytes = checked_bytes(path, 400000000);
  LabelImage out;
  if (is_palette_png(bytes)) {
    out.values = decode_palette_indices(path, bytes);
    out.palette = true;
    return out;
  }
  cv::Mat img = decode_bytes(path, bytes, cv::IMREAD_UNCHANGED | cv::IMREAD_IGNORE_ORIENTATION);
  if (img.channels() > 1) {  // a colour image whose channels agree is grey; otherwise not a label map
    std::vector<cv::Mat> ch;
    cv::split(img, ch);
    for (size_t c = 1; c < ch.size() && c < 3; ++c)
      if (cv::countNonZero(ch[c] != ch[0]) > 0)
        throw Error(path + ": a colour image without a palette is not a label map (expected palette or grayscale PNG)");
    img = ch[0];
  }
  if (img.depth() != CV_8U && img.depth() != CV_16U)
    throw Error(path + ": label maps must be 8- or 16-bit (palette or grayscale)");
  img.convertTo(out.values, CV_32S);
  return out;
}

cv::Mat read_mask(const std::string& path) {
  const std::string bytes = checked_bytes(path, 400000000);
  if (is_palette_png(bytes)) {  // index 0 background, 255 void (as 128), any other index object
    const cv::Mat idx = decode_palette_indices(path, bytes);
    cv::Mat m(idx.size(), CV_8U);
    for (int y = 0; y < idx.rows; ++y)
      for (int x = 0; x < idx.cols; ++x) {
        const int v = idx.at<int>(y, x);
        m.at<uint8_t>(y, x) = v == 0 ? 0 : v == 255 ? 128 : 255;
      }
    return m;
  }
  cv::Mat img = decode_bytes(path, bytes, cv::IMREAD_UNCHANGED);
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
