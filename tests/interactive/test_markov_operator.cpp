#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "m2n2/core/error.hpp"
#include "m2n2/interactive/markov_operator.hpp"
#include "m2n2/interactive/start_state.hpp"

using namespace m2n2;

namespace {
AttentionMap random_attention(int h, int w, int seed) {
  AttentionMap m;
  m.h = h;
  m.w = w;
  const int n = h * w;
  m.data.resize(static_cast<size_t>(n) * n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.01f, 1.0f);
  for (int i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < n; ++j) s += (m.data[static_cast<size_t>(i) * n + j] = u(rng) * u(rng) * u(rng));
    for (int j = 0; j < n; ++j) m.data[static_cast<size_t>(i) * n + j] /= static_cast<float>(s);
  }
  return m;
}
AttentionMap random_attention(int g, int seed) { return random_attention(g, g, seed); }
}  // namespace

TEST(MarkovOperator, SinkhornMakesRowsAndColumnsSumToOne) {
  const AttentionMap a = random_attention(6, 7);
  MarkovOperator op(a, OperatorParams{});
  const auto d = op.dense();
  const int n = 36;
  for (int i = 0; i < n; ++i) {
    double r = 0, c = 0;
    for (int j = 0; j < n; ++j) {
      r += d[static_cast<size_t>(i) * n + j];
      c += d[static_cast<size_t>(j) * n + i];
    }
    EXPECT_NEAR(r, 1.0, 1e-5);
    EXPECT_NEAR(c, 1.0, 1e-5);
  }
}

// --precision fp16 on the CPU: one Sinkhorn iteration in fp32, M = diag(r1) K diag(c1)
// stored in fp16, the other 199 iterations on M (markov_operator.cpp). 10 x 13 = 130
// tokens, not a multiple of 16 or 4: the vector loop, its tail columns and the last
// rows all run. What the steps apply is doubly stochastic for the stored values, within
// fp16 rounding of the fp32 operator, and gives the same Markov-maps to 1e-2 steps.
TEST(MarkovOperator, HalfStorageBalancesWhatItStores) {
  const AttentionMap a = random_attention(10, 13, 11);
  OperatorParams p32, p16;
  p16.precision = Precision::Float16;
  MarkovOperator op32(a, p32), op16(a, p16);
  const auto d32 = op32.dense(), d16 = op16.dense();
  const int n = 130;
  double worst_rel = 0;
  for (int i = 0; i < n; ++i) {
    double r = 0, c = 0;
    for (int j = 0; j < n; ++j) {
      r += d16[static_cast<size_t>(i) * n + j];
      c += d16[static_cast<size_t>(j) * n + i];
      const double x = d32[static_cast<size_t>(i) * n + j], y = d16[static_cast<size_t>(i) * n + j];
      worst_rel = std::max(worst_rel, std::abs(y - x) / x);
    }
    EXPECT_NEAR(r, 1.0, 1e-5) << "row " << i;
    EXPECT_NEAR(c, 1.0, 1e-5) << "column " << i;
  }
  EXPECT_LT(worst_rel, 2e-3);  // fp16 keeps 11 bits: 2^-12 = 2.4e-4 per stored value
  EXPECT_GT(worst_rel, 0.0);   // and it is not the fp32 operator
  EXPECT_EQ(op16.bytes_per_step(), static_cast<int64_t>(n) * n * 2);
  MarkovParams mp;
  std::vector<std::vector<float>> starts;
  for (int t : {0, 64, 129}) starts.push_back(start_state(t % 13 + 0.5, t / 13 + 0.5, 10, 13, 10, 13));
  const auto m32 = op32.markov_maps(starts, mp), m16 = op16.markov_maps(starts, mp);
  for (size_t b = 0; b < starts.size(); ++b)
    for (int j = 0; j < n; ++j) EXPECT_NEAR(m16[b][j], m32[b][j], 1e-2) << "chain " << b << ", token " << j;
}

TEST(MarkovOperator, TemperatureSharpensRows) {
  AttentionMap a;
  a.h = 1;
  a.w = 2;
  a.data = {0.8f, 0.2f, 0.2f, 0.8f};
  OperatorParams p;
  p.temperature = 0.5;  // A^(1/T) = A^2 row-normalised: 0.64/(0.64+0.04)
  p.ipf_iterations = 0;
  MarkovOperator op(a, p);
  const auto d = op.dense();
  EXPECT_NEAR(d[0], 0.64 / 0.68, 1e-6);
  EXPECT_NEAR(d[1], 0.04 / 0.68, 1e-6);
}

// Two disconnected 2-token blocks [[a,1-a],[1-a,a]] with a = 0.8 (already doubly
// stochastic; T = 1 leaves it unchanged). From token 0:
//   s1 = [0.8, 0.2]/0.8 = [1, 0.25]           (0.25 < 0.3: not crossed)
//   s2 = [0.85, 0.4]/0.85 = [1, 0.470588]     crossed at i = 1:
//   value = 1 + 1 - (0.470588 - 0.3) / ((0.470588 - 0.25) + 1e-6) = 1.226668
// Tokens of the other block are never reached and keep max_iterations.
TEST(MarkovOperator, BlockDiagonalCrossingStepsByHand) {
  AttentionMap a;
  a.h = 2;
  a.w = 2;
  a.data = {0.8f, 0.2f, 0, 0, 0.2f, 0.8f, 0, 0, 0, 0, 0.8f, 0.2f, 0, 0, 0.2f, 0.8f};
  OperatorParams p;
  p.temperature = 1.0;
  MarkovOperator op(a, p);
  MarkovParams mp;
  mp.max_iterations = 50;
  const auto s0 = start_state(0, 0, 2, 2, 2, 2);
  ASSERT_EQ(s0, (std::vector<float>{1, 0, 0, 0}));
  const auto m = op.markov_maps({s0}, mp)[0];
  EXPECT_FLOAT_EQ(m[0], 0.0f);
  const double s2 = 0.4 / 0.85;
  EXPECT_NEAR(m[1], 2.0 - (s2 - 0.3) / ((s2 - 0.25) + 1e-6), 1e-5);
  EXPECT_FLOAT_EQ(m[2], 50.0f);
  EXPECT_FLOAT_EQ(m[3], 50.0f);
  // Without interpolation: the integer step, and max+1 for unreached tokens.
  mp.linear_interpolation = false;
  const auto m2 = op.markov_maps({s0}, mp)[0];
  EXPECT_FLOAT_EQ(m2[1], 2.0f);
  EXPECT_FLOAT_EQ(m2[2], 51.0f);
}

TEST(MarkovOperator, BatchedChainsEqualSingleChains) {
  const AttentionMap a = random_attention(8, 3);
  MarkovOperator op(a, OperatorParams{});
  std::vector<std::vector<float>> starts = {start_state(10, 20, 100, 120, 8, 8), start_state(90, 50, 100, 120, 8, 8),
                                            start_state(0, 99, 100, 120, 8, 8)};
  const auto batch = op.markov_maps(starts, MarkovParams{});
  for (size_t b = 0; b < starts.size(); ++b) {
    const auto one = op.markov_maps({starts[b]}, MarkovParams{})[0];
    for (size_t j = 0; j < one.size(); ++j) EXPECT_NEAR(batch[b][j], one[j], 1e-4) << b << " " << j;
  }
}

TEST(StartState, BilinearSplatNormalisedToMax) {
  // Image 100×100, grid 4: u = 3·x/100.
  const auto s = start_state(50, 50, 100, 100, 4, 4);  // u = v = 1.5
  EXPECT_FLOAT_EQ(s[1 * 4 + 1], 1.0f);
  EXPECT_FLOAT_EQ(s[1 * 4 + 2], 1.0f);
  EXPECT_FLOAT_EQ(s[2 * 4 + 1], 1.0f);
  EXPECT_FLOAT_EQ(s[2 * 4 + 2], 1.0f);
  const auto e = start_state(99, 0, 100, 100, 4, 4);  // u = 2.97
  EXPECT_FLOAT_EQ(e[3], 1.0f);
  EXPECT_NEAR(e[2], 0.03 / 0.97, 1e-6);
}

TEST(MarkovOperator, RejectsBadArguments) {
  AttentionMap a;
  a.h = a.w = 2;
  a.data = {1, 0, 0};
  EXPECT_THROW(MarkovOperator(a, OperatorParams{}), Error);
  const AttentionMap ok = random_attention(2, 1);
  OperatorParams p;
  p.temperature = 0;
  EXPECT_THROW(MarkovOperator(ok, p), Error);
}

// A key token that no query attends to has no column mass for Sinkhorn to divide by:
// the reference's IPF turns the whole operator to NaN without a word. Every path
// refuses it and names the token: a column of exact zeros, and one whose entries
// become 0 in the temperature (under e^-86 of their rows' largest). Without IPF the
// sharpened rows are the operator, and nothing divides by a column.
TEST(MarkovOperator, RejectsAKeyTokenThatNoQueryAttendsTo) {
  for (const float empty_value : {0.0f, 1e-35f}) {
    AttentionMap a = random_attention(4, 5, 3);
    a.name = "layer.7";
    const int n = 20, column = 13;  // grid row 2, column 3
    for (int i = 0; i < n; ++i) {
      float* row = a.data.data() + static_cast<size_t>(i) * n;
      row[column] = empty_value;
      double s = 0;
      for (int j = 0; j < n; ++j) s += row[j];
      for (int j = 0; j < n; ++j) row[j] = static_cast<float>(row[j] / s);
    }
    OperatorParams fp32, fp16, two_pass, lt;
    fp16.precision = Precision::Float16;
    two_pass.two_pass_sinkhorn = true;
    lt.libtorch = true;
    for (const OperatorParams& p : {fp32, fp16, two_pass, lt}) {
      try {
        MarkovOperator op(a, p);
        ADD_FAILURE() << "no error for the empty column (value " << empty_value << ")";
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()),
                  "attention 'layer.7': key token 13 (grid row 2, column 3) gets no attention from any query, so the "
                  "Markov operator cannot be made doubly stochastic")
            << "precision " << static_cast<int>(p.precision) << ", libtorch " << p.libtorch;
      }
    }
    OperatorParams no_ipf = fp32;
    no_ipf.ipf_iterations = 0;
    const auto d = MarkovOperator(a, no_ipf).dense();
    for (int i = 0; i < n; ++i) EXPECT_EQ(d[static_cast<size_t>(i) * n + column], 0.0f);
  }
}

// The CPU's one-pass Sinkhorn kernel computes the iterates of the two-product form:
// the same doubly stochastic operator up to summation order.
TEST(MarkovOperator, OnePassSinkhornEqualsTwoMatrixVectorProducts) {
  for (int g : {5, 12}) {  // N = 25 (below one vector block) and 144
    const AttentionMap a = random_attention(g, 3 + g);
    OperatorParams one, two;
    two.two_pass_sinkhorn = true;
    for (int iterations : {1, 7, 200}) {
      one.ipf_iterations = two.ipf_iterations = iterations;
      const auto x = MarkovOperator(a, one).dense(), y = MarkovOperator(a, two).dense();
      ASSERT_EQ(x.size(), y.size());
      double worst = 0;
      for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(x[i]) - y[i]) / y[i]);
      EXPECT_LT(worst, 2e-5) << "grid " << g << ", " << iterations << " iterations";
    }
  }
}

// The CPU operator is plain C++; LibTorch builds the operator on a CUDA device. Run
// on the CPU, that code path (OperatorParams::libtorch) gives the same operator and
// the same Markov-maps as the plain one, up to summation order.
TEST(MarkovOperator, PlainCpuOperatorEqualsTheLibTorchOne) {
  for (int g : {5, 12}) {
    const AttentionMap a = random_attention(g, 11 + g);
    OperatorParams plain, lt;
    lt.libtorch = true;
    const MarkovOperator x(a, plain), y(a, lt);
    EXPECT_EQ(x.device(), Device::Cpu);
    EXPECT_EQ(y.device(), Device::Cpu);
    const auto dx = x.dense(), dy = y.dense();
    ASSERT_EQ(dx.size(), dy.size());
    double worst = 0;
    for (size_t i = 0; i < dx.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(dx[i]) - dy[i]) / dy[i]);
    EXPECT_LT(worst, 2e-5) << "grid " << g;
    std::vector<std::vector<float>> starts;
    for (int b = 0; b < 3; ++b) {
      std::vector<float> s(static_cast<size_t>(g) * g, 0.0f);
      s[static_cast<size_t>(b * 7) % s.size()] = 1.0f;
      starts.push_back(s);
    }
    const auto mx = x.markov_maps(starts, MarkovParams{}), my = y.markov_maps(starts, MarkovParams{});
    for (size_t b = 0; b < starts.size(); ++b)
      for (size_t j = 0; j < mx[b].size(); ++j) EXPECT_NEAR(mx[b][j], my[b][j], 1e-3) << "grid " << g << ", chain " << b;
    std::vector<float> sx = starts[0], sy = starts[0];
    x.step(sx, 1);
    y.step(sy, 1);
    for (size_t j = 0; j < sx.size(); ++j) EXPECT_NEAR(sx[j], sy[j], 1e-5);
  }
}

// The plain sharpening (vectorised log and exp) on rows with exact zeros, subnormal
// values and a range of 40 decades, against LibTorch's softmax(log(A)/T): zeros stay
// zero, and every other entry agrees to float precision.
TEST(MarkovOperator, PlainSharpeningMatchesLibTorchOnZerosAndTinyValues) {
  const int g = 4, n = g * g;
  AttentionMap a;
  a.h = a.w = g;
  a.data.assign(static_cast<size_t>(n) * n, 0.0f);
  for (int i = 0; i < n; ++i) {
    float* row = a.data.data() + static_cast<size_t>(i) * n;
    for (int j = 0; j < n; ++j) {
      const int kind = (i + 3 * j) % 5;
      row[j] = kind == 0 ? 0.0f : kind == 1 ? 1e-40f : kind == 2 ? std::pow(10.0f, -static_cast<float>(j % 40)) : 0.5f + j;
    }
    double s = 0;
    for (int j = 0; j < n; ++j) s += row[j];
    for (int j = 0; j < n; ++j) row[j] = static_cast<float>(row[j] / s);
  }
  OperatorParams plain, lt;
  plain.ipf_iterations = lt.ipf_iterations = 0;
  lt.libtorch = true;
  const auto x = MarkovOperator(a, plain).dense(), y = MarkovOperator(a, lt).dense();
  for (size_t e = 0; e < x.size(); ++e) {
    if (a.data[e] == 0.0f) {
      EXPECT_EQ(x[e], 0.0f) << e;
      continue;
    }
    if (y[e] < 1e-30f) {
      EXPECT_LT(x[e], 1e-30f) << e;  // under e^-86 of the row's largest: 0 here, subnormal in LibTorch
      continue;
    }
    EXPECT_NEAR(x[e], y[e], 4e-7 * y[e]) << e;
  }
}
