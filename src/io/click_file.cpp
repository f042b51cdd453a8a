#include "m2n2/io/click_file.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "m2n2/core/error.hpp"
#include "m2n2/io/json_read.hpp"

namespace m2n2 {

namespace {

bool valid_id(const std::string& id) {
  if (id.empty() || id.size() > 200 || id == "." || id == "..") return false;
  for (char c : id)
    if (c == '/' || c == '\\' || c == '\0' || static_cast<unsigned char>(c) < 32) return false;
  return true;
}

ObjectSpec parse_object(const nlohmann::json& o, size_t index) {
  ObjectSpec s;
  s.id = "#" + std::to_string(index);
  if (!o.is_object()) {
    s.error = "object must be a JSON object";
    return s;
  }
  if (o.contains("id")) {
    const auto& id = o["id"];
    if (id.is_string()) s.id = id.get<std::string>();
    else if (id.is_number_integer()) s.id = std::to_string(id.get<long long>());
    else {
      s.error = "\"id\" must be a string";
      return s;
    }
  } else {
    s.id = std::to_string(index);
  }
  if (!valid_id(s.id)) {
    s.error = "invalid object id (empty, '/' or control characters)";
    return s;
  }
  if (o.contains("category_id")) {
    const auto& c = o["category_id"];
    // Integers that every JSON reader holds exactly (COCO's ids are integers).
    constexpr long long kMax = 1LL << 53;
    const bool ok = c.is_number_unsigned() ? c.get<unsigned long long>() <= static_cast<unsigned long long>(kMax)
                                           : c.is_number_integer() && c.get<long long>() >= 0 && c.get<long long>() <= kMax;
    if (!ok) {
      s.error = "\"category_id\" must be an integer in 0..2^53";
      return s;
    }
    s.category_id = c.get<long long>();
  }
  if (o.contains("label")) {
    const auto& l = o["label"];
    if (!l.is_string() || l.get<std::string>().empty() || l.get<std::string>().size() > 200) {
      s.error = "\"label\" must be a string of 1 to 200 bytes";
      return s;
    }
    s.label = l.get<std::string>();
    for (char ch : s.label)
      if (static_cast<unsigned char>(ch) < 32) {
        s.error = "\"label\" must not hold control characters";
        return s;
      }
  }
  if (!o.contains("clicks") || !o["clicks"].is_array()) {
    s.error = "\"clicks\" must be a list";
    return s;
  }
  if (o["clicks"].empty()) {
    s.error = "object has no clicks";
    return s;
  }
  std::map<std::pair<long long, long long>, bool> seen;
  for (const auto& c : o["clicks"]) {
    if (!c.is_object() || !c.contains("x") || !c.contains("y")) {
      s.error = "each click needs numeric \"x\" and \"y\"";
      return s;
    }
    if (!c["x"].is_number() || !c["y"].is_number()) {
      s.error = "click coordinates must be numbers";
      return s;
    }
    Click k;
    k.x = c["x"].get<double>();
    k.y = c["y"].get<double>();
    if (!std::isfinite(k.x) || !std::isfinite(k.y) || std::fabs(k.x) > 1e9 || std::fabs(k.y) > 1e9) {
      s.error = "click coordinates must be finite";
      return s;
    }
    if (c.contains("positive")) {
      if (!c["positive"].is_boolean()) {
        s.error = "click \"positive\" must be true or false";
        return s;
      }
      k.positive = c["positive"].get<bool>();
    }
    const auto px = click_pixel(k);
    const std::pair<long long, long long> key{px.x, px.y};
    auto it = seen.find(key);
    if (it != seen.end()) {
      if (it->second != k.positive) {
        s.error = "conflicting clicks at pixel (" + std::to_string(px.x) + "," + std::to_string(px.y) + ")";
        return s;
      }
      s.warnings.push_back("duplicate click at (" + std::to_string(px.x) + "," + std::to_string(px.y) + ") ignored");
      continue;
    }
    seen[key] = k.positive;
    s.clicks.push_back(k);
  }
  return s;
}

}  // namespace

ImageSpec parse_image_entry(const nlohmann::json& j) {
  ImageSpec s;
  if (!j.is_object()) {
    s.error = "image entry must be a JSON object";
    return s;
  }
  if (!j.contains("image") || !j["image"].is_string() || j["image"].get<std::string>().empty()) {
    s.error = "image entry needs a non-empty string \"image\"";
    return s;
  }
  s.image = j["image"].get<std::string>();
  if (!j.contains("objects") || !j["objects"].is_array()) {
    s.error = "\"objects\" must be a list";
    return s;
  }
  std::set<std::string> ids;
  size_t i = 0;
  for (const auto& o : j["objects"]) {
    ObjectSpec os = parse_object(o, i++);
    if (os.error.empty() && !ids.insert(os.id).second) os.error = "duplicate object id";
    s.objects.push_back(std::move(os));
  }
  if (s.objects.empty()) s.error = "image entry has no objects";
  return s;
}

std::vector<ImageSpec> parse_click_file(const std::string& text, const std::string& name) {
  nlohmann::json j;
  try {
    j = read_json(text, name);
  } catch (const nlohmann::json::exception& e) {
    std::string w = e.what();
    throw Error(name + ": malformed JSON (" + w.substr(w.find(']') + 2) + ")");
  }
  if (!j.is_object() || !j.contains("images") || !j["images"].is_array())
    throw Error(name + ": expected {\"images\": [...]}");
  std::vector<ImageSpec> out;
  for (const auto& e : j["images"]) out.push_back(parse_image_entry(e));
  return out;
}

ImageSpec parse_click_line(const std::string& line) {
  nlohmann::json j;
  try {
    j = read_json(line, "JSON line");
  } catch (const nlohmann::json::exception& e) {
    ImageSpec s;
    std::string w = e.what();
    s.error = "malformed JSON line (" + w.substr(w.find(']') + 2) + ")";
    return s;
  } catch (const Error& e) {
    ImageSpec s;
    s.error = e.what();
    return s;
  }
  return parse_image_entry(j);
}

std::pair<int, int> parse_shard(const std::string& s, const char* flag) {
  int i = 0, n = 1;
  char tail = 0;
  if (std::sscanf(s.c_str(), "%d/%d%c", &i, &n, &tail) != 2 || n < 1 || i < 0 || i >= n)
    throw InvalidArgument(std::string(flag) + ": expected I/N with 0 <= I < N, got '" + s + "'");
  return {i, n};
}

Click parse_click(const std::string& s) {
  const auto a = s.find(','), b = s.rfind(',');
  if (a == std::string::npos || a == b) throw InvalidArgument("click: expected X,Y,+ or X,Y,-, got '" + s + "'");
  Click c;
  try {
    size_t p1, p2;
    const std::string xs = s.substr(0, a), ys = s.substr(a + 1, b - a - 1);
    c.x = std::stod(xs, &p1);
    c.y = std::stod(ys, &p2);
    if (p1 != xs.size() || p2 != ys.size()) throw 0;
  } catch (...) {
    throw InvalidArgument("click: coordinates of '" + s + "' are not numbers");
  }
  if (!std::isfinite(c.x) || !std::isfinite(c.y)) throw InvalidArgument("click: coordinates of '" + s + "' must be finite");
  const std::string l = s.substr(b + 1);
  if (l == "+" || l == "pos" || l == "1" || l == "p") c.positive = true;
  else if (l == "-" || l == "neg" || l == "0" || l == "n") c.positive = false;
  else throw InvalidArgument("click: label of '" + s + "' must be + or -");
  return c;
}

std::vector<Click> parse_clicks(const std::vector<std::string>& texts) {
  std::vector<Click> out;
  for (const auto& t : texts) out.push_back(parse_click(t));
  return out;
}

cv::Point2d parse_point(const std::string& s) {
  const auto a = s.find(',');
  if (a == std::string::npos) throw InvalidArgument("expected X,Y, got '" + s + "'");
  try {
    size_t p1, p2;
    const std::string xs = s.substr(0, a), ys = s.substr(a + 1);
    const double x = std::stod(xs, &p1), y = std::stod(ys, &p2);
    if (p1 != xs.size() || p2 != ys.size() || !std::isfinite(x) || !std::isfinite(y)) throw 0;
    return {x, y};
  } catch (...) {
    throw InvalidArgument("expected X,Y with finite numbers, got '" + s + "'");
  }
}

}  // namespace m2n2
