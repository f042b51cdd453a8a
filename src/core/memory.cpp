#include "m2n2/core/memory.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "m2n2/core/error.hpp"

#ifdef __linux__
#include <sys/mman.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace m2n2 {

double available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double value;
  std::string unit;
  while (f >> key >> value >> unit) {
    if (key == "MemAvailable:") return value * 1024.0;
  }
  return 0.0;
}

double parse_memory_size(const std::string& s) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    throw Error("max_memory: cannot parse '" + s + "' (expected e.g. 512M, 4G)");
  }
  std::string unit = s.substr(pos);
  double mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KB" || unit == "KiB" || unit == "k") mult = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MiB") mult = 1024.0 * 1024.0;
  else if (unit == "G" || unit == "GB" || unit == "GiB") mult = 1024.0 * 1024.0 * 1024.0;
  else throw Error("max_memory: unknown unit '" + unit + "' in '" + s + "'");
  if (!(v > 0) || !std::isfinite(v)) throw Error("max_memory: must be positive, got '" + s + "'");
  return v * mult;
}

std::string format_bytes(double b) {
  char buf[64];
  if (b >= 1024.0 * 1024.0 * 1024.0) std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1024.0 * 1024.0 * 1024.0));
  else if (b >= 1024.0 * 1024.0) std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024.0));
  else std::snprintf(buf, sizeof buf, "%.0f KiB", b / 1024.0);
  return buf;
}

void check_memory(double needed, double limit, const std::string& what, const std::string& hint) {
  const bool user_limit = limit > 0;
  const double avail = user_limit ? limit : available_memory_bytes();
  if (avail <= 0) return;  // unknown: do not guess
  if (needed > avail) {
    throw MemoryError(what + " needs about " + format_bytes(needed) + " but only " + format_bytes(avail) +
                      (user_limit ? " is allowed (--max-memory)" : " is available") + "; " + hint);
  }
}

void check_memory(double needed, double limit, double available, const std::string& device, const std::string& what,
                  const std::string& hint) {
  const bool user_limit = limit > 0;
  const double avail = user_limit ? limit : available;
  if (avail <= 0) return;  // unknown: do not guess
  if (needed > avail) {
    throw MemoryError(what + " needs about " + format_bytes(needed) + " but only " + format_bytes(avail) +
                      (user_limit ? " is allowed (--max-memory)" : " is available on the " + device) + "; " + hint);
  }
}

void advise_huge_pages(void* p, std::size_t bytes) {
#ifdef __linux__
  constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
  if (bytes < 2 * kHuge) return;
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p), e = a + bytes;
  const std::uintptr_t lo = (a + kHuge - 1) / kHuge * kHuge, hi = e / kHuge * kHuge;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

std::shared_ptr<float[]> allocate_large_floats(std::size_t n) {
  constexpr std::size_t kAlign = std::size_t{2} << 20;
  const std::size_t bytes = std::max<std::size_t>(kAlign, (n * sizeof(float) + kAlign - 1) / kAlign * kAlign);
  void* p = std::aligned_alloc(kAlign, bytes);
  if (!p) throw std::bad_alloc();
#ifdef __linux__
  madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without huge pages it is a no-op
#endif
  return std::shared_ptr<float[]>(static_cast<float*>(p), [](float* q) { std::free(q); });
}

void keep_freed_memory() {
#if defined(__GLIBC__)
  // Blocks under the threshold come from the heap, and its top is not trimmed below
  // twice that: a run's working set stays mapped. In this VM a page fault costs
  // several microseconds; the GrabCut eval paid ~250,000 of them for 50 images.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}

}  // namespace m2n2
