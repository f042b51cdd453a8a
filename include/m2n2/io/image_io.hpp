// m2n2 — reading images and masks, writing PNGs atomically.
#pragma once
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

struct LoadedImage {
  cv::Mat rgb;       // CV_8UC3, RGB
  std::string note;  // what was converted (grayscale, alpha, 16-bit), empty if nothing
};

// Which pixel grid a JPEG with an EXIF orientation tag gives: Apply (default) turns it
// as browsers and cv::imread show the photo, so clicks refer to that view; Ignore keeps
// the stored grid. Other formats are read as stored.
enum class ExifOrientation { Apply, Ignore };
// The process-wide mode of read_rgb without an explicit one (the CLI's --exif).
void set_exif_orientation(ExifOrientation mode);
ExifOrientation exif_orientation();
ExifOrientation parse_exif_orientation(const std::string& s);  // apply | ignore; Error otherwise

// Reads any image OpenCV can decode and converts it to 8-bit RGB. Throws Error
// ("path: problem") for missing, unreadable, corrupt, empty or absurdly large files.
LoadedImage read_rgb(const std::string& path, int64_t max_pixels = 400000000);
LoadedImage read_rgb(const std::string& path, int64_t max_pixels, ExifOrientation exif);
// The structural checks read_rgb runs on a file's bytes before decoding: PNG chunks up
// to IEND, IHDR size against max_pixels (no overflow for any header), JPEG end marker.
// Throws Error("path: problem").
void check_image_bytes(const std::string& path, const std::string& bytes, int64_t max_pixels);
// A label map as stored: palette PNGs by index (libspng), grayscale by value (8- or
// 16-bit; a colour image whose channels all agree counts as grayscale). values: CV_32S.
struct LabelImage {
  cv::Mat values;
  bool palette = false;
};
LabelImage read_label_image(const std::string& path);
// Reads a mask as CV_8U. Palette PNGs by index: 0 -> 0 (background), 255 -> 128 (void,
// VOC's convention), any other index -> 255 (object). Otherwise the first channel,
// 16-bit scaled down (grayscale: >128 object, 128 void in GrabCut's convention).
cv::Mat read_mask(const std::string& path);
// Writes a PNG through a temporary file and a rename.
void write_png_atomic(const std::string& path, const cv::Mat& img);
// Encodes an image to PNG bytes.
std::string encode_png(const cv::Mat& img);

// 64-bit FNV-1a hash of the decoded pixels (the cache key of an image), as hex.
std::string content_hash(const cv::Mat& m);

// The regular files of a folder, sorted by path; InvalidArgument("DIR: not a folder").
std::vector<std::string> list_files(const std::string& dir);

}  // namespace m2n2
