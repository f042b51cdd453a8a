#include "m2n2/io/json_read.hpp"

#include "m2n2/core/error.hpp"

namespace m2n2 {

int json_depth(const std::string& text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest && (deepest = depth) > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

nlohmann::json read_json(const std::string& text, const std::string& what, int max_depth) {
  if (json_depth(text, max_depth) > max_depth)
    throw Error(what + ": JSON nested deeper than " + std::to_string(max_depth) + " levels");
  return nlohmann::json::parse(text);
}

}  // namespace m2n2
