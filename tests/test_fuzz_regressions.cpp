// Replays every input the fuzzers once crashed on (tests/fuzz/regressions/<target>/)
// through the same entry points: each must now end in a clean Error or success.
#include <gtest/gtest.h>

#include <filesystem>

#include "m2n2/io/click_file.hpp"
#include "m2n2/eval/datasets.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/io/npy.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace m2n2;

namespace {
std::vector<fs::path> inputs(const std::string& target) {
  std::vector<fs::path> out;
  for (const char* kind : {"regressions", "corpus"}) {
    const fs::path d = fs::path(test::source_dir()) / "tests" / "fuzz" / kind / target;
    if (fs::is_directory(d))
      for (const auto& e : fs::directory_iterator(d)) out.push_back(e.path());
  }
  return out;
}
}  // namespace

TEST(FuzzRegressions, Npy) {
  for (const auto& p : inputs("fuzz_npy")) {
    try {
      parse_npy(read_file(p.string()), p.string());
    } catch (const Error&) {
    }
  }
}

TEST(FuzzRegressions, ClickJson) {
  for (const auto& p : inputs("fuzz_click_json")) {
    const std::string text = read_file(p.string());
    try {
      parse_click_file(text, p.string());
    } catch (const Error&) {
    }
    parse_click_line(text);
  }
}

TEST(FuzzRegressions, Coco) {
  for (const auto& p : inputs("fuzz_coco")) {
    try {
      for (const auto& in : parse_coco(read_file(p.string()), p, "/nonexistent")) {
        try {
          load_ground_truth(in);
        } catch (const Error&) {
        }
      }
    } catch (const Error&) {
    }
  }
}

TEST(FuzzRegressions, Mask) {
  for (const auto& p : inputs("fuzz_mask")) {
    Instance in;
    in.id = "x";
    in.mask_path = p.string();
    try {
      load_ground_truth(in);
    } catch (const Error&) {
    }
  }
}
