// m2n2 — errors raised by the core library.
#pragma once
#include <stdexcept>
#include <string>

namespace m2n2 {

// Every failure the library reports on bad input is an Error whose message is one
// line that names the offending file or argument first ("path: problem").
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A bad argument of the caller's (a file or setting given to the library, not an item
// of a batch): front ends report it as a usage error.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// Raised when an operation would need more memory than allowed.
class MemoryError : public Error {
 public:
  using Error::Error;
};

// The first line of any exception's message, trimmed (OpenCV and LibTorch errors carry
// source paths and backtraces on further lines); std::bad_alloc reads "out of memory".
std::string one_line_message(const std::exception& e);
// A device or host allocation failure (std::bad_alloc, "CUDA out of memory", ...).
bool is_out_of_memory(const std::exception& e);


}  // namespace m2n2
