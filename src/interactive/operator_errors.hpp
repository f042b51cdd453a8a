// Private: the error message shared by the Markov operator's CPU path
// (markov_operator.cpp) and its LibTorch path (markov_operator_torch.cpp), so that
// both word it alike.
#pragma once
#include <cstdint>
#include <string>

namespace m2n2::detail {

// The error where Sinkhorn's scaling vectors are not finite. Sinkhorn divides by each
// column's mass: a key token that no query attends to (a column of zeros in the
// sharpened attention: zero in the map, or under e^-86 of its row's largest entry)
// has none, and every scaling turns to inf or NaN (the reference's IPF does the same,
// silently). `zero_column` is that token, or -1 where no column is empty.
inline std::string unbalanced_message(const std::string& name, int w, int64_t zero_column) {
  const std::string what = "attention '" + name + "': ";
  if (zero_column < 0) return what + "Sinkhorn's scaling did not stay finite";
  return what + "key token " + std::to_string(zero_column) + " (grid row " + std::to_string(zero_column / w) +
         ", column " + std::to_string(zero_column % w) +
         ") gets no attention from any query, so the Markov operator cannot be made doubly stochastic";
}

}  // namespace m2n2::detail
