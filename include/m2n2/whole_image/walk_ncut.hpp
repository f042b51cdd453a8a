// m2n2 — random-walk Normalized Cuts on self-attention (see spec/walk_ncut.md):
// the attention as a Markov chain, a power walk P^k, recursive bipartition.
#pragma once
#include <string>
#include <vector>

#include "m2n2/whole_image/diffseg.hpp"

namespace m2n2 {

// When to accept a split (the paper's rule is unknown; each candidate is named).
enum class StopPolicy {
  Constant,  // accept iff NCut < tau
  Null,      // accept iff NCut < 1, the NCut of any split of a structureless walk
  SweepMad,  // accept iff min NCut < median - MAD of the sweep's NCut values
  Parent,    // accept iff NCut <= the NCut of the split that made this segment (and < 1)
};
StopPolicy parse_stop_policy(const std::string& s);  // constant | null | sweep-mad | parent (else InvalidArgument)
std::string to_string(StopPolicy p);

// The graph that is cut (spec walk_ncut.md §3): the symmetrised random walk on P^k
// (items 4-5), or the similarity of the tokens' attention profiles, rows of P^k (item 6:
// cosine, min-max scaled, raised to alpha, DiffCut's affinity).
enum class NcutGraph { Transition, Similarity };
NcutGraph parse_ncut_graph(const std::string& s);  // transition | similarity (else InvalidArgument)
std::string to_string(NcutGraph g);

struct NcutParams {
  int power = 4;        // k of the power walk P^k
  int grid = 32;        // use the attention map whose side is closest to this
  StopPolicy policy = StopPolicy::Constant;
  double tau = 0.5;     // for Constant
  int min_size = 4;     // smallest segment (tokens) that may be split off
  int max_depth = 8;
  int sweep = 100;      // thresholds tried along the eigenvector
  NcutGraph graph = NcutGraph::Transition;
  double alpha = 10;    // exponent of the similarity affinity (DiffCut's)
};
// Throws InvalidArgument naming the flag of the first setting out of range.
void check_params(const NcutParams& p);

struct Bipartition {
  std::vector<char> side;  // 1 = y > theta
  double ncut = 1e300;
  std::vector<double> sweep_ncut;
};

// One random-walk NCut bipartition of a row-stochastic n×n matrix (row-major).
Bipartition rw_ncut_bipartition(const std::vector<double>& P, int n, int sweep);

// NCut bipartition of a symmetric n×n affinity (degrees = row sums).
Bipartition graph_ncut_bipartition(const std::vector<double>& W, int n, int sweep);

// Recursive bipartition; returns a label per token (0..K-1).
std::vector<int> recursive_rw_ncut(const std::vector<float>& P, int n, const NcutParams& p);

AutoResult walk_ncut(const Attention& att, int height, int width, const NcutParams& p);

}  // namespace m2n2
