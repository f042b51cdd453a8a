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

// Test hook: when the environment variable M2N2_INJECT_FAULT is "KIND@NAME" and `name`
// equals NAME, throws the kind of exception a real failure there would raise:
// cv (cv::Exception), bad_alloc, c10 (c10::Error) or cuda_oom (c10::Error saying "CUDA
// out of memory"; not thrown when `on_cpu`, as the real one never is). Does nothing otherwise.
void inject_fault(const std::string& name, bool on_cpu = false);

}  // namespace m2n2
