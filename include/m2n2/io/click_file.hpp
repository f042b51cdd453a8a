// The click file format of `m2n2 segment --clicks` (schema: docs/clicks.schema.json):
// {"images": [{"image": "a.jpg", "objects": [{"id": "cat", "clicks": [{"x": 12, "y": 40, "positive": true}]}]}]}
// and its JSON Lines form (one image entry per line).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "m2n2/interactive/segmenter.hpp"

namespace m2n2 {

struct ObjectSpec {
  std::string id;
  std::vector<Click> clicks;
  long long category_id = -1;  // the object's class for the exports (-1: none given)
  std::string label;           // its class name ("": none given)
  std::string error;                  // the object cannot be segmented (message)
  std::vector<std::string> warnings;  // e.g. duplicate clicks dropped
};

struct ImageSpec {
  std::string image;
  std::vector<ObjectSpec> objects;
  std::string error;  // the whole entry is unusable (message)
};

// One image entry; problems are recorded in the returned spec, never thrown.
ImageSpec parse_image_entry(const nlohmann::json& j);
// A whole click file ({"images": [...]}); throws Error("name: problem") when the
// file is not JSON or has no "images" list.
std::vector<ImageSpec> parse_click_file(const std::string& text, const std::string& name);
// One JSON Lines line.
ImageSpec parse_click_line(const std::string& line);

// Command-line forms (InvalidArgument when malformed): "X,Y,+" / "X,Y,-" (also
// pos/neg/1/0/p/n), "X,Y", and a shard "I/N" (0 <= I < N) named by `flag`.
Click parse_click(const std::string& s);
std::vector<Click> parse_clicks(const std::vector<std::string>& texts);  // each as parse_click
cv::Point2d parse_point(const std::string& s);
std::pair<int, int> parse_shard(const std::string& s, const char* flag = "--shard");

}  // namespace m2n2
