#include "m2n2/io/output_folder.hpp"

#include <filesystem>

#include "m2n2/core/error.hpp"

namespace m2n2 {

std::string OutputFolders::folder(const std::string& image) {
  const auto known = by_image_.find(image);
  if (known != by_image_.end()) return known->second;
  const std::filesystem::path p(image);
  const std::string stem = p.stem().string();
  if (stem.empty() || stem == "." || stem == "..")
    throw Error(image + ": the file name has no stem to name its output folder");
  std::string name = stem;
  if (taken_.count(name)) {
    name = p.filename().string();
    for (int k = 2; taken_.count(name); ++k) name = p.filename().string() + "~" + std::to_string(k);
  }
  taken_.insert(name);
  by_image_.emplace(image, name);
  return name;
}

}  // namespace m2n2
