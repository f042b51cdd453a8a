// m2n2 — the start state of a click on the token grid.
#pragma once
#include <vector>

namespace m2n2 {

// Bilinear splat of image point (x, y) of an H×W image onto the h×w grid
// (u = (w-1)·x/W, v = (h-1)·y/H), divided by its maximum. Returns h*w floats.
std::vector<float> start_state(double x, double y, int H, int W, int h, int w);

}  // namespace m2n2
