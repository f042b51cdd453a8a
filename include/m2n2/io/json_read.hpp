// m2n2 — the one way JSON from outside is read: nesting is bounded before any value is
// built, so a document nested a few hundred thousand levels deep is a one-line error,
// not a stack overflow in the recursive copies and destructors of the parsed value.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace m2n2 {

// The deepest nesting of arrays and objects accepted (the documents m2n2 reads need < 10).
constexpr int kMaxJsonDepth = 64;

// Parses `text`. Nesting deeper than `max_depth` throws Error("WHAT: JSON nested deeper
// than N levels") before parsing; malformed JSON throws nlohmann::json::parse_error as
// nlohmann::json::parse does (callers keep their own message for it).
nlohmann::json read_json(const std::string& text, const std::string& what, int max_depth = kMaxJsonDepth);

// The deepest nesting of arrays and objects in `text` (strings skipped), stopping early
// once it exceeds `limit`.
int json_depth(const std::string& text, int limit);

}  // namespace m2n2
