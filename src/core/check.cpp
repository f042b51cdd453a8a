#include "core/check.hpp"

#include <cmath>
#include <cstdio>

#include "m2n2/core/error.hpp"

namespace m2n2::check {
namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

[[noreturn]] void fail(const char* field, const std::string& rule, const std::string& got) {
  throw InvalidArgument(std::string(field) + " must be " + rule + ", got " + got);
}

}  // namespace

void in_range(const char* field, long long value, long long lo, long long hi) {
  if (value < lo || value > hi) fail(field, "in " + std::to_string(lo) + ".." + std::to_string(hi), std::to_string(value));
}

void at_least(const char* field, long long value, long long lo) {
  if (value < lo) fail(field, "at least " + std::to_string(lo), std::to_string(value));
}

void positive(const char* field, double value) {
  if (!(value > 0) || !std::isfinite(value)) fail(field, "a finite number > 0", number(value));
}

void non_negative(const char* field, double value) {
  if (!(value >= 0) || !std::isfinite(value)) fail(field, "a finite number >= 0", number(value));
}

void in_interval(const char* field, double value, double lo, bool lo_open, double hi, bool hi_open) {
  const bool above = lo_open ? value > lo : value >= lo;
  const bool below = hi_open ? value < hi : value <= hi;
  if (!(above && below))  // NaN fails both
    fail(field, "in " + std::string(lo_open ? "(" : "[") + number(lo) + ", " + number(hi) + (hi_open ? ")" : "]"),
         number(value));
}

void not_one_of(const char* field, const std::string& value, std::initializer_list<const char*> choices) {
  std::string list;
  size_t i = 0;
  for (const char* c : choices) {
    if (i > 0) list += i + 1 == choices.size() ? " or " : ", ";
    list += c;
    ++i;
  }
  throw InvalidArgument(std::string(field) + ": expected " + list + ", got '" + value + "'");
}

void one_of(const char* field, const std::string& value, std::initializer_list<const char*> choices) {
  for (const char* c : choices)
    if (value == c) return;
  not_one_of(field, value, choices);
}

}  // namespace m2n2::check
