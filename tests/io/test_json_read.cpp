// The project's one JSON reader: nesting bounded before anything is built, at every place
// that reads JSON from outside (click files, JSON Lines, COCO files).
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "m2n2/core/error.hpp"
#include "m2n2/eval/datasets.hpp"
#include "m2n2/io/click_file.hpp"
#include "m2n2/io/json_read.hpp"

using namespace m2n2;

namespace {

std::string nested(int depth, char open = '[', char close = ']') {
  return std::string(depth, open) + std::string(depth, close);
}

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(JsonRead, Depth) {
  EXPECT_EQ(json_depth("{}", 64), 1);
  EXPECT_EQ(json_depth(R"({"a": [1, {"b": "[[[[ in a string \" ]"}]})", 64), 3);
  EXPECT_EQ(json_depth("1", 64), 0);
  EXPECT_EQ(json_depth(nested(1000), 64), 65);  // stops once over the limit
}

TEST(JsonRead, CapBeforeParsing) {
  EXPECT_EQ(read_json(nested(kMaxJsonDepth), "x").dump().size(), 2u * kMaxJsonDepth);
  const std::string m = message_of([] { read_json(nested(kMaxJsonDepth + 1), "body"); });
  EXPECT_EQ(m, "body: JSON nested deeper than 64 levels");
  // Deep enough to overflow the stack in recursive copies if it were ever built.
  EXPECT_THROW(read_json(std::string(500000, '['), "deep"), Error);
  EXPECT_THROW(read_json(nested(300000, '{', '}'), "deep"), Error);
  EXPECT_THROW(read_json("[1,", "x"), nlohmann::json::parse_error);
}

TEST(JsonRead, ClickFilesCocoAndJsonLines) {
  const std::string deep = R"({"images": [{"image": "a.png", "objects": )" + std::string(400000, '[') + "}]}";
  const std::string m = message_of([&] { parse_click_file(deep, "clicks.json"); });
  EXPECT_EQ(m, "clicks.json: JSON nested deeper than 64 levels");
  const ImageSpec line = parse_click_line(std::string(400000, '{'));
  EXPECT_NE(line.error.find("nested deeper than 64"), std::string::npos) << line.error;
  const std::string coco = R"({"images": [], "annotations": )" + nested(200000) + "}";
  EXPECT_EQ(message_of([&] { parse_coco(coco, "instances.json", ""); }), "instances.json: JSON nested deeper than 64 levels");
}
