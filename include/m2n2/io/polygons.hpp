// m2n2 — polygons from binary masks, for the formats annotation tools read (COCO
// polygons, LabelMe, YOLO-seg).
//
// Coordinates are on the pixel-corner lattice: pixel (x, y) is the square
// [x, x+1] x [y, y+1], so a polygon traced at tolerance 0 holds exactly the pixels
// whose centres (x+0.5, y+0.5) lie inside it (even-odd rule). Foreground is
// 8-connected: two pixels touching at a corner are one object.
#pragma once
#include <vector>

#include <opencv2/core.hpp>

namespace m2n2 {

// Douglas-Peucker tolerance, in pixels, of the polygon exports unless a flag says otherwise.
constexpr double kDefaultPolygonTolerance = 1.0;

// One 8-connected component of a mask: its outer boundary and its holes.
struct MaskPolygon {
  std::vector<cv::Point> outer;               // clockwise as the image shows it (x right, y down)
  std::vector<std::vector<cv::Point>> holes;  // counter-clockwise
};

// The components of a CV_8U mask (non-zero = object), in the order of their first pixel
// in row-major order, each simplified by Douglas-Peucker with `tolerance` pixels
// (0 keeps every corner; collinear corners are always dropped). A hole that simplifies
// to fewer than 3 vertices is dropped; an outer ring never is (it keeps its corners).
// Throws InvalidArgument for a mask that is not CV_8U or a negative / non-finite tolerance.
std::vector<MaskPolygon> mask_to_polygons(const cv::Mat& mask, double tolerance = kDefaultPolygonTolerance);

// One ring for formats without holes: each hole is joined to the ring by a bridge, a
// segment walked out and back, from its vertex nearest to the ring. The bridges enclose
// no area, so the ring holds the same pixels under the even-odd and the non-zero rules.
std::vector<cv::Point> bridge_holes(const MaskPolygon& polygon);
// One ring for a whole mask (formats with one polygon per object): the components, holes
// bridged, joined to each other by bridges the same way. Empty for no components.
std::vector<cv::Point> bridge_all(const std::vector<MaskPolygon>& polygons);

// Twice the signed area (shoelace): positive for a clockwise ring as the image shows it.
long long twice_signed_area(const std::vector<cv::Point>& ring);

}  // namespace m2n2
