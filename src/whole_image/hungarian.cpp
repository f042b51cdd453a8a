#include "m2n2/whole_image/hungarian.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "m2n2/core/error.hpp"

namespace m2n2 {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

int augmenting_path(int nc, const std::vector<double>& cost, std::vector<double>& u, std::vector<double>& v,
                    std::vector<int>& path, std::vector<int>& row4col, std::vector<double>& spc, int i,
                    std::vector<char>& SR, std::vector<char>& SC, std::vector<int>& remaining, double* p_min) {
  double minVal = 0;
  int num_remaining = nc;
  for (int it = 0; it < nc; ++it) remaining[it] = nc - it - 1;
  std::fill(SR.begin(), SR.end(), 0);
  std::fill(SC.begin(), SC.end(), 0);
  std::fill(spc.begin(), spc.end(), kInf);
  int sink = -1;
  while (sink == -1) {
    int index = -1;
    double lowest = kInf;
    SR[i] = 1;
    for (int it = 0; it < num_remaining; ++it) {
      const int j = remaining[it];
      const double r = minVal + cost[static_cast<size_t>(i) * nc + j] - u[i] - v[j];
      if (r < spc[j]) {
        path[j] = i;
        spc[j] = r;
      }
      if (spc[j] < lowest || (spc[j] == lowest && row4col[j] == -1)) {
        lowest = spc[j];
        index = it;
      }
    }
    minVal = lowest;
    if (minVal == kInf || index < 0) return -1;
    const int j = remaining[index];
    if (row4col[j] == -1) sink = j;
    else i = row4col[j];
    SC[j] = 1;
    remaining[index] = remaining[--num_remaining];
  }
  *p_min = minVal;
  return sink;
}
}  // namespace

Assignment linear_sum_assignment(const std::vector<double>& cost_in, int nr, int nc, bool maximize) {
  if (static_cast<int64_t>(cost_in.size()) != static_cast<int64_t>(nr) * nc) throw Error("assignment: cost has the wrong size");
  Assignment out;
  if (nr == 0 || nc == 0) return out;
  const bool transpose = nc < nr;
  std::vector<double> cost(cost_in.size());
  if (transpose) {
    for (int i = 0; i < nr; ++i)
      for (int j = 0; j < nc; ++j) cost[static_cast<size_t>(j) * nr + i] = cost_in[static_cast<size_t>(i) * nc + j];
    std::swap(nr, nc);
  } else {
    cost = cost_in;
  }
  for (auto& c : cost) {
    if (maximize) c = -c;
    if (std::isnan(c) || c == -kInf) throw Error("assignment: invalid cost (NaN or -inf)");
  }
  std::vector<double> u(nr, 0), v(nc, 0), spc(nc, kInf);
  std::vector<int> path(nc, -1), col4row(nr, -1), row4col(nc, -1), remaining(nc);
  std::vector<char> SR(nr), SC(nc);
  for (int cur = 0; cur < nr; ++cur) {
    double minVal = 0;
    const int sink = augmenting_path(nc, cost, u, v, path, row4col, spc, cur, SR, SC, remaining, &minVal);
    if (sink < 0) throw Error("assignment: cost matrix is infeasible");
    u[cur] += minVal;
    for (int i = 0; i < nr; ++i)
      if (SR[i] && i != cur) u[i] += minVal - spc[col4row[i]];
    for (int j = 0; j < nc; ++j)
      if (SC[j]) v[j] -= minVal - spc[j];
    int j = sink;
    while (true) {
      const int i = path[j];
      row4col[j] = i;
      std::swap(col4row[i], j);
      if (i == cur) break;
    }
  }
  if (transpose) {
    std::vector<int> order(nr);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return col4row[a] < col4row[b]; });
    for (int i : order) {
      out.rows.push_back(col4row[i]);
      out.cols.push_back(i);
    }
  } else {
    for (int i = 0; i < nr; ++i) {
      out.rows.push_back(i);
      out.cols.push_back(col4row[i]);
    }
  }
  return out;
}

}  // namespace m2n2
