// m2n2 — rectangular linear sum assignment (shortest augmenting path, as in
// SciPy's linear_sum_assignment, whose tie-breaking it follows).
#pragma once
#include <vector>

namespace m2n2 {

// cost: rows×cols row-major. Returns, for each row (when rows <= cols) the assigned
// column; when rows > cols, the rows assigned to each column are returned as pairs.
struct Assignment {
  std::vector<int> rows, cols;  // matched pairs, sorted by row
};
Assignment linear_sum_assignment(const std::vector<double>& cost, int rows, int cols, bool maximize);

}  // namespace m2n2
