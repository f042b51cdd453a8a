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

}  // namespace m2n2
