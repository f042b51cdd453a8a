#include "core/stable_order.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>

namespace m2n2::detail {

std::vector<int> stable_order(const float* v, int n) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<uint64_t> a(n), b(n);
  for (int i = 0; i < n; ++i) {
    if (std::isnan(v[i])) {
      std::stable_sort(order.begin(), order.end(), [v](int x, int y) { return v[x] < v[y]; });
      return order;
    }
    uint32_t k;
    std::memcpy(&k, &v[i], sizeof k);
    if (k == 0x80000000u) k = 0;
    k = (k & 0x80000000u) ? ~k : (k | 0x80000000u);
    a[i] = (static_cast<uint64_t>(k) << 32) | static_cast<uint32_t>(i);
  }
  constexpr int kShift[3] = {32, 43, 54};
  constexpr uint32_t kMask[3] = {0x7ff, 0x7ff, 0x3ff};
  std::vector<uint32_t> count(3 * 2048, 0);
  for (const uint64_t x : a)
    for (int d = 0; d < 3; ++d) ++count[d * 2048 + ((x >> kShift[d]) & kMask[d])];
  for (int d = 0; d < 3; ++d) {
    uint32_t* c = &count[d * 2048];
    if (c[(a[0] >> kShift[d]) & kMask[d]] == static_cast<uint32_t>(n)) continue;
    uint32_t sum = 0;
    for (int j = 0; j < 2048; ++j) {
      const uint32_t here = c[j];
      c[j] = sum;
      sum += here;
    }
    for (const uint64_t x : a) b[c[(x >> kShift[d]) & kMask[d]]++] = x;
    a.swap(b);
  }
  for (int i = 0; i < n; ++i) order[i] = static_cast<int>(a[i] & 0xffffffffu);
  return order;
}

}  // namespace m2n2::detail
