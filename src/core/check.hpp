// The library's one range checker. Each check throws InvalidArgument with a one-line
// message that names the field as the library knows it ("temperature must be > 0, got
// -1"); front ends that call the field something else (a command-line flag) rename it
// in their own table (src/cli/common.cpp, flag_message).
#pragma once
#include <initializer_list>
#include <string>

namespace m2n2::check {

// lo <= value <= hi: "FIELD must be in LO..HI, got VALUE".
void in_range(const char* field, long long value, long long lo, long long hi);
// value >= lo: "FIELD must be at least LO, got VALUE".
void at_least(const char* field, long long value, long long lo);
// A finite value > 0: "FIELD must be a finite number > 0, got VALUE".
void positive(const char* field, double value);
// A finite value >= 0: "FIELD must be a finite number >= 0, got VALUE".
void non_negative(const char* field, double value);
// A value in an interval, each end open or closed: "FIELD must be in (0, 1], got VALUE".
void in_interval(const char* field, double value, double lo, bool lo_open, double hi, bool hi_open);
// One of the choices: "FIELD: expected a, b or c, got 'VALUE'".
void one_of(const char* field, const std::string& value, std::initializer_list<const char*> choices);
// The message of one_of, for parsers that return an enum.
[[noreturn]] void not_one_of(const char* field, const std::string& value, std::initializer_list<const char*> choices);

}  // namespace m2n2::check
