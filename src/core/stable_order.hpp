#pragma once
// Sorting float keys by a radix sort, for the per-image stages that order many values.
#include <vector>

namespace m2n2::detail {

// Indices 0..n-1 ordered by v, ties in index order: what std::stable_sort with
// operator< gives, as an LSD radix sort of (key << 32 | index) on the key's three
// digits (11, 11 and 10 bits). A digit that is the same for every value is skipped.
// The key maps a float's bits to an unsigned order (-0 as +0). NaN has no order
// under operator<, so such input takes std::stable_sort itself.
std::vector<int> stable_order(const float* v, int n);

}  // namespace m2n2::detail
