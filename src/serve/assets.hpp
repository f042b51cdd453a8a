// The page, script and style of `m2n2 serve`, embedded at build time from src/serve/web
// (cmake/embed_assets.cmake writes the table).
#pragma once
#include <cstddef>

namespace m2n2::serve {

struct Asset {
  const char* path;          // URL path, e.g. "/app.js"
  const char* content_type;  // e.g. "text/javascript; charset=utf-8"
  const unsigned char* data;
  size_t size;
};

extern const Asset kAssets[];
extern const size_t kAssetCount;

}  // namespace m2n2::serve
