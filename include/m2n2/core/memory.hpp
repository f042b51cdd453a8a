// m2n2 — memory estimates and limits, checked before big allocations.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

namespace m2n2 {

// Bytes the system reports as available (MemAvailable), or 0 if unknown.
double available_memory_bytes();

// Parses "512M", "2G", "1.5GiB", "1000000" (bytes). Throws Error on bad input.
double parse_memory_size(const std::string& s);
std::string format_bytes(double bytes);

// Throws MemoryError naming `what` when `needed` exceeds `limit` (or, with
// limit = 0, what is available). `hint` is appended (e.g. "use a smaller grid").
void check_memory(double needed, double limit, const std::string& what, const std::string& hint);
// The same against `available` bytes of a named device ("GPU", "host") when no limit is given.
void check_memory(double needed, double limit, double available, const std::string& device, const std::string& what,
                  const std::string& hint);

// An uninitialised buffer of n floats for a large table written once: 2 MiB-aligned
// and, on Linux, marked for transparent huge pages (where the system allows them on
// request), so that filling 100 MiB takes ~50 page faults instead of ~26,000.
// Throws std::bad_alloc when the memory is not there.
std::shared_ptr<float[]> allocate_large_floats(std::size_t n);
// Asks for transparent huge pages over the 2 MiB pages inside [p, p + bytes), for a
// large buffer allocated but not yet written (e.g. after std::vector::reserve).
// Advice only; does nothing off Linux or for buffers under 4 MiB.
void advise_huge_pages(void* p, std::size_t bytes);

// For a process that segments image after image: freed blocks up to 256 MiB stay
// with the process for the next image or click. By default glibc hands every block
// over 128 KiB (a distance map, a sort's scratch) back to the kernel when it is freed,
// and each reuse pays a page fault per 4 KiB. A process-wide setting of the C
// library: a front end calls it once at start; the library never does. No effect
// off glibc.
void keep_freed_memory();

}  // namespace m2n2
