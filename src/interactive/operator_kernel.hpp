// Private: the Markov operator built and applied in LibTorch (markov_operator_torch.cpp,
// part of the LibTorch backend).
#pragma once
#include <cstdint>
#include <memory>

#include "libtorch/backend.hpp"
#include "m2n2/interactive/markov_operator.hpp"

namespace m2n2::detail {

std::unique_ptr<OperatorKernel> make_libtorch_operator(AttentionMap&& att, const OperatorParams& params);

}  // namespace m2n2::detail
