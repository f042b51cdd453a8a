// m2n2 — where the masks of an image go: OUT/<folder>/<object id>.png, one rule for
// `m2n2 segment` and `m2n2 serve`.
#pragma once
#include <map>
#include <set>
#include <string>

namespace m2n2 {

// Hands out output folders in the order images are met (a click file's order):
//   - the first image with a given stem gets "<stem>" (OUT/a/ for a.png: the common case);
//   - a different file met later with the same stem gets its file name ("a.jpg"), or
//     "<file name>~2", "~3"... when that is taken too (same name in another folder);
//   - the same file met again gets the folder it got before.
// Throws Error("IMAGE: ...") for a stem that cannot be a folder (empty, "." or "..").
class OutputFolders {
 public:
  // `image`: the image's path as it identifies the file (callers pass a normalised
  // absolute path, or a name inside one folder).
  std::string folder(const std::string& image);

 private:
  std::map<std::string, std::string> by_image_;
  std::set<std::string> taken_;
};

}  // namespace m2n2
