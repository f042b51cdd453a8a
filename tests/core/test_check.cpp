#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "core/check.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/m2n2.hpp"
#include "m2n2/whole_image/diffseg.hpp"
#include "m2n2/whole_image/lightcluster.hpp"
#include "m2n2/whole_image/walk_ncut.hpp"

using namespace m2n2;

namespace {
// The message of the InvalidArgument that f throws ("" when it throws nothing).
std::string invalid(const std::function<void()>& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}
}  // namespace

// The one range checker: each rule, NaN and the ends of intervals, with the field named.
TEST(Check, MessagesNameTheFieldAndTheValue) {
  EXPECT_EQ(invalid([] { check::in_range("power", 0, 1, 1024); }), "power must be in 1..1024, got 0");
  EXPECT_EQ(invalid([] { check::in_range("power", 1024, 1, 1024); }), "");
  EXPECT_EQ(invalid([] { check::at_least("sample", 1, 2); }), "sample must be at least 2, got 1");
  EXPECT_EQ(invalid([] { check::positive("temperature", -1); }), "temperature must be a finite number > 0, got -1");
  EXPECT_EQ(invalid([] { check::positive("temperature", 0); }), "temperature must be a finite number > 0, got 0");
  EXPECT_NE(invalid([] { check::positive("temperature", std::nan("")); }), "");
  EXPECT_NE(invalid([] { check::non_negative("tau", 1.0 / 0.0); }), "");
  EXPECT_EQ(invalid([] { check::non_negative("tau", 0); }), "");
  EXPECT_EQ(invalid([] { check::in_interval("max_area", 0, 0, true, 1, false); }), "max_area must be in (0, 1], got 0");
  EXPECT_EQ(invalid([] { check::in_interval("max_area", 1, 0, true, 1, false); }), "");
  EXPECT_EQ(invalid([] { check::in_interval("min_component", 1, 0, false, 1, true); }),
            "min_component must be in [0, 1), got 1");
  EXPECT_NE(invalid([] { check::in_interval("threshold", std::nan(""), 0, true, 1, true); }), "");
  EXPECT_EQ(invalid([] { check::one_of("refine", "x", {"jbu", "none"}); }), "refine: expected jbu or none, got 'x'");
  EXPECT_EQ(invalid([] { check::one_of("stop", "x", {"a", "b", "c"}); }), "stop: expected a, b or c, got 'x'");
  EXPECT_EQ(invalid([] { check::one_of("refine", "none", {"jbu", "none"}); }), "");
}

// The engine refuses bad options before it sets anything up, in the field's own name.
TEST(Check, EngineValidatesItsOptions) {
  EngineOptions o;
  o.params.op.temperature = -1;
  EXPECT_EQ(invalid([&] { Engine e(o); }), "temperature must be a finite number > 0, got -1");
  o = EngineOptions();
  o.params.markov.threshold = 1;
  EXPECT_EQ(invalid([&] { Engine e(o); }), "threshold must be in (0, 1), got 1");
  o = EngineOptions();
  o.params.jbu.range_sigma = 0;
  EXPECT_EQ(invalid([&] { Engine e(o); }), "range_sigma must be a finite number > 0, got 0");
  o = EngineOptions();
  o.cache_max_bytes = -5;
  EXPECT_EQ(invalid([&] { Engine e(o); }), "cache_max_bytes must be a finite number >= 0, got -5");
}

// Every whole-image entry checks its parameters itself, before touching the attention.
TEST(Check, WholeImageEntriesValidateTheirParameters) {
  const Attention none;
  DiffSegParams d;
  d.anchors = 0;
  EXPECT_EQ(invalid([&] { diffseg(none, 8, 8, d); }), "anchors must be in 1..64, got 0");
  d = DiffSegParams();
  d.kl_thresholds = {1.1, -1};
  EXPECT_EQ(invalid([&] { diffseg(none, 8, 8, d); }), "kl_thresholds must be a finite number >= 0, got -1");
  NcutParams n;
  n.tau = -1;
  EXPECT_EQ(invalid([&] { walk_ncut(none, 8, 8, n); }), "tau must be a finite number >= 0, got -1");
  n = NcutParams();
  n.grid = 0;
  EXPECT_EQ(invalid([&] { walk_ncut(none, 8, 8, n); }), "ncut.grid must be in 1..256, got 0");
  LightClusterParams l;
  l.vote = 4;
  EXPECT_EQ(invalid([&] { check_params(l); }), "vote must be in 1..3, got 4");
}
