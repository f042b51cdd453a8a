// m2n2 — efficient graph-based image segmentation (Felzenszwalb & Huttenlocher,
// IJCV 2004), used by the embedded default source to know which pixels belong
// to the same region.
#pragma once
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

// Segments a CV_32FC3 image (any colour space; distances are Euclidean in it)
// on its 8-connected pixel grid. Two regions merge when the edge between them is
// no heavier than either region's largest internal edge plus k / |region|;
// afterwards regions smaller than min_size pixels are merged into a neighbour
// along the lightest edges. Returns CV_32S labels 0..count-1 (count in *count).
cv::Mat graph_segmentation(const cv::Mat& image, double k, int min_size, int* count);
// The same for several k on one image, building and sorting its edges once:
// labels[i] and counts[i] are those of ks[i].
std::vector<cv::Mat> graph_segmentation(const cv::Mat& image, const std::vector<double>& ks, int min_size,
                                        std::vector<int>* counts);

}  // namespace m2n2
