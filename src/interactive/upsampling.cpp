#include "m2n2/interactive/upsampling.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "m2n2/core/device.hpp"
#include "m2n2/core/error.hpp"
#include "m2n2/core/memory.hpp"
#include "core/fast_math.hpp"
#include "core/check.hpp"

namespace m2n2 {

namespace {

// PyTorch's area_pixel_compute_source_index for align_corners=False, in float.
void source_index(int out_size, int in_size, std::vector<int>& i0, std::vector<int>& off, std::vector<float>& l0,
                  std::vector<float>& l1) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  i0.resize(out_size);
  off.resize(out_size);
  l0.resize(out_size);
  l1.resize(out_size);
  for (int d = 0; d < out_size; ++d) {
    float src = scale * (static_cast<float>(d) + 0.5f) - 0.5f;
    if (src < 0) src = 0;
    const int i = static_cast<int>(src);
    i0[d] = i;
    off[d] = i < in_size - 1 ? 1 : 0;
    const float lam = std::min(std::max(src - static_cast<float>(i), 0.0f), 1.0f);
    l1[d] = lam;
    l0[d] = 1.0f - lam;
  }
}

double normal_pdf(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI); }

}  // namespace

cv::Mat upsample_bilinear(const cv::Mat& low, int H, int W) {
  CV_Assert(low.type() == CV_32F);
  std::vector<int> xi, xo, yi, yo;
  std::vector<float> xl0, xl1, yl0, yl1;
  source_index(W, low.cols, xi, xo, xl0, xl1);
  source_index(H, low.rows, yi, yo, yl0, yl1);
  cv::Mat out(H, W, CV_32F);
  for (int y = 0; y < H; ++y) {
    const float* r0 = low.ptr<float>(yi[y]);
    const float* r1 = low.ptr<float>(yi[y] + yo[y]);
    float* o = out.ptr<float>(y);
    for (int x = 0; x < W; ++x) {
      const int a = xi[x], b = xi[x] + xo[x];
      o[x] = yl0[y] * (xl0[x] * r0[a] + xl1[x] * r0[b]) + yl1[y] * (xl0[x] * r1[a] + xl1[x] * r1[b]);
    }
  }
  return out;
}

JointBilateralUpsampler::Axis JointBilateralUpsampler::make_axis(int out, int in, double sigma) {
  Axis a;
  source_index(out, in, a.i0, a.off, a.l0, a.l1);
  const double scale = static_cast<double>(out) / in;
  a.radius = static_cast<int>(3.0 * scale * sigma + 1.0);
  a.lo.resize(out);
  int cells = 1;
  for (int p = 0; p < out; ++p) {
    const int lo_px = std::max(0, p - a.radius), hi_px = std::min(out - 1, p + a.radius);
    a.lo[p] = a.i0[lo_px];
    cells = std::max(cells, a.i0[hi_px] + a.off[hi_px] - a.lo[p] + 1);
  }
  a.cells = cells;
  return a;
}

double JointBilateralUpsampler::estimate_table_bytes(int H, int W, int gh, int gw, const JbuParams& p) {
  const double cx = 2.0 * (3.0 * p.spatial_sigma + 1.0 / (static_cast<double>(W) / gw)) + 3.0;
  const double cy = 2.0 * (3.0 * p.spatial_sigma + 1.0 / (static_cast<double>(H) / gh)) + 3.0;
  return static_cast<double>(H) * W * std::ceil(cx) * std::ceil(cy) * 4.0;
}

double JointBilateralUpsampler::required_table_bytes(int H, int W, int gh, int gw, const JbuParams& p) {
  const Axis ax = make_axis(W, gw, p.spatial_sigma), ay = make_axis(H, gh, p.spatial_sigma);
  return static_cast<double>(H) * W * ay.cells * ax.cells * 4.0;
}

JointBilateralUpsampler::JointBilateralUpsampler(const cv::Mat& rgb8, int gh, int gw, const JbuParams& params,
                                                 double max_table_bytes)
    : rgb_(rgb8), H_(rgb8.rows), W_(rgb8.cols), h_(gh), w_(gw), params_(params) {
  if (rgb8.type() != CV_8UC3) throw Error("upsampling: the guide image must be 8-bit RGB");
  check::positive("spatial_sigma", params.spatial_sigma);
  check::positive("range_sigma", params.range_sigma);
  ax_ = make_axis(W_, w_, params.spatial_sigma);
  ay_ = make_axis(H_, h_, params.spatial_sigma);
  const double sx = static_cast<double>(W_) / w_, sy = static_cast<double>(H_) / h_;
  const double max_r_x = 3.0 * sx * params.spatial_sigma, max_r_y = 3.0 * sy * params.spatial_sigma;
  // Window offsets in the reference's order: dy outer, dx inner, inside 3 sigma.
  for (int dy = -static_cast<int>(max_r_y + 1); dy < static_cast<int>(max_r_y + 2); ++dy) {
    const double spy = dy / (sy * params.spatial_sigma);
    Row row{dy, 1 << 30, -(1 << 30), {}};
    std::vector<float> sp;
    for (int dx = -static_cast<int>(max_r_x + 1); dx < static_cast<int>(max_r_x + 2); ++dx) {
      const double spx = dx / (sx * params.spatial_sigma);
      if (spx * spx + spy * spy > 9.0) continue;
      row.dx_min = std::min(row.dx_min, dx);
      row.dx_max = std::max(row.dx_max, dx);
    }
    if (row.dx_min > row.dx_max) continue;
    for (int dx = row.dx_min; dx <= row.dx_max; ++dx) {
      const double spx = dx / (sx * params.spatial_sigma);
      row.spatial.push_back(static_cast<float>(normal_pdf(spx) * normal_pdf(spy)));
    }
    rows_.push_back(std::move(row));
  }
  // Range weight per channel as a function of the 8-bit difference.
  const float rs = static_cast<float>(params.range_sigma);
  for (int d = -255; d <= 255; ++d) {
    const float diff = static_cast<float>(d / 255.0) / rs;
    range_lut_[d + 255] = std::exp(-0.5f * diff * diff);
  }
  if (static_cast<double>(H_) * W_ * ay_.cells * ax_.cells * 4.0 <= max_table_bytes) build_table();
}

namespace {

// The bilateral weight of a neighbour for the table and the untabulated filter: its
// spatial weight times 2^(-k2 · |colour difference|²) with k2 = k·log2(e) (see
// range_k2), one exponential for the three channels.
inline float bilateral_weight(float spatial, float dr, float dg, float db, float k2) {
  // Below 2^-86.6 (e^-60) the weight is 0: weights under 1e-26 of the centre's change
  // nothing, and their products would be denormals, which are very slow.
  return spatial * detail::fast_exp2(-k2 * (dr * dr + dg * dg + db * db), -86.5617024533f);
}

// Range weight: Π_c exp(-½((Δ_c/255)/σ_r)²) = exp(-k·Σ_c Δ_c²) = 2^(-k2·Σ_c Δ_c²).
float range_k2(double range_sigma) {
  return static_cast<float>(0.5 / (255.0 * 255.0 * range_sigma * range_sigma) * 1.4426950408889634);
}

}  // namespace

namespace {

// The table is built for L consecutive pixels of one image row at a time, one pixel
// per SIMD lane. The loop runs over the neighbour columns q that any lane's window
// reaches, so the neighbour's colour and its bilinear grid column and weights are
// the same for all lanes, and only the spatial weight differs: it is read from the
// window row stored reversed and zero-padded, where lane j finds its offset q − p_j
// at position j of a contiguous load. Neighbours outside a lane's window get spatial
// weight 0. Columns sharing a grid column are summed in registers first.
constexpr int kLanes = 16;

struct TableInput {
  const float *R, *G, *B;  // colour planes of the image, row-major
  const int* cell;         // left grid column a of the bilinear pair, per image column
  const float *l0, *l1;    // weights of a and a+1 (l1 = 0 where the pair is clamped to one column)
  int H, W, KY, NXC;
  float k;
};

struct WindowRow {
  int dy, dx_min, dx_max;
  // spatial weight of offset dx at rev[pad + dx_max − dx], zero elsewhere (pad = L − 1 on both sides)
  const float* rev;
};

// The colours of the block's L pixels (row py from px0). Lanes past the image's right
// edge repeat its last pixel; they are never written out.
inline void lane_colours(const TableInput& in, int py, int px0, float* pr, float* pg, float* pb) {
  for (int j = 0; j < kLanes; ++j) {
    const size_t i = static_cast<size_t>(py) * in.W + std::min(px0 + j, in.W - 1);
    pr[j] = in.R[i];
    pg[j] = in.G[i];
    pb[j] = in.B[i];
  }
}

// The part of one window row that the block's L pixels reach: image row qy, columns
// [q_lo, q_hi], and `rev` such that rev[j − q] is the spatial weight of lane j's
// offset q − (px0 + j). False when the row is outside the image or reaches nothing.
struct RowSpan {
  int qy, q_lo, q_hi;
  const float* rev;
};
inline bool row_span(const TableInput& in, const WindowRow& row, int py, int px0, RowSpan& s) {
  s.qy = py + row.dy;
  if (s.qy < 0 || s.qy >= in.H) return false;
  s.q_lo = std::max(0, px0 + row.dx_min);
  s.q_hi = std::min(in.W - 1, px0 + kLanes - 1 + row.dx_max);
  s.rev = row.rev + (kLanes - 1) + row.dx_max + px0;
  return s.q_lo <= s.q_hi;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void table_block(const TableInput& in, const WindowRow* rows, int n_rows, int py, int px0, int lo_blk,
                 int cy_lo, const int* cy0, const int* cy_off, const float* ay0, const float* ay1,
                 float* __restrict accY, float* __restrict accX, double* __restrict wsum) {
  constexpr int L = kLanes;
  const int NXC = in.NXC;
  std::fill(accY, accY + static_cast<size_t>(in.KY + 1) * NXC * L, 0.0f);
  for (int j = 0; j < L; ++j) wsum[j] = 0;
  float pr[L], pg[L], pb[L];
  lane_colours(in, py, px0, pr, pg, pb);
  const float k = in.k;
  for (int r = 0; r < n_rows; ++r) {
    RowSpan span;
    if (!row_span(in, rows[r], py, px0, span)) continue;
    const int qy = span.qy, q_lo = span.q_lo, q_hi = span.q_hi;
    const float* R = in.R + static_cast<size_t>(qy) * in.W;
    const float* G = in.G + static_cast<size_t>(qy) * in.W;
    const float* B = in.B + static_cast<size_t>(qy) * in.W;
    const float* rev = span.rev;
    float rs[L] = {};
    const int c_first = in.cell[q_lo] - lo_blk;
    int c_last = c_first;
    for (int q = q_lo; q <= q_hi;) {
      const int c = in.cell[q];
      float s0[L] = {}, s1[L] = {};
      for (; q <= q_hi && in.cell[q] == c; ++q) {
        const float cr = R[q], cg = G[q], cb = B[q], w0 = in.l0[q], w1 = in.l1[q];
        const float* sp = rev - q;
#pragma omp simd
        for (int j = 0; j < L; ++j) {
          const float w = bilateral_weight(sp[j], cr - pr[j], cg - pg[j], cb - pb[j], k);
          rs[j] += w;
          s0[j] += w * w0;
          s1[j] += w * w1;
        }
      }
      c_last = c - lo_blk;
      float* a0 = accX + static_cast<size_t>(c_last) * L;
      float* a1 = a0 + L;
#pragma omp simd
      for (int j = 0; j < L; ++j) {
        a0[j] += s0[j];
        a1[j] += s1[j];
      }
    }
    // Fold the row into the block's rows ky and ky + 1 with the bilinear y-weights;
    // accX is all zero before each row: it starts so, and each row clears what it used.
    const int ky = cy0[qy] - cy_lo;
    float* y0 = accY + static_cast<size_t>(ky) * NXC * L;
    float* y1 = accY + static_cast<size_t>(ky + cy_off[qy]) * NXC * L;
    const float b0 = ay0[qy], b1 = ay1[qy];
    for (int i = c_first * L; i < (c_last + 2) * L; ++i) {
      y0[i] += accX[i] * b0;
      y1[i] += accX[i] * b1;
      accX[i] = 0.0f;
    }
    for (int j = 0; j < L; ++j) wsum[j] += rs[j];
  }
}

// The filter without a table works offset by offset rather than pixel by pixel: for
// one window offset o = (dy, dx), the weights w(p, p + o) of a whole image row of
// pixels p are one vector loop over contiguous colours. The weight is symmetric,
// w(p, q) = w(q, p) (the window and its Gaussian are), so each pair is weighed once
// and added to both ends: offsets with dy > 0 update p and p + o, which lie in
// different rows. Offsets with dy = 0 would alias within a row; they update p only,
// both signs of dx. Half the exponentials of the pixel-by-pixel form, and no lanes
// outside a window.
struct PairRows {
  const float *pr, *pg, *pb, *ph;  // the row of p: colours and the bilinear upsampled map
  const float *qr, *qg, *qb, *qh;  // the row of q = p + o, at the same column index i
  float *pn, *pd;                  // Σ w·h(q) and Σ w, accumulated for p
  float *qn, *qd;                  // the same for q (both ends) or null (p only)
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void weigh_pairs(const PairRows& r, int n, float spatial, float k) {
  const float* __restrict pr = r.pr;
  const float* __restrict pg = r.pg;
  const float* __restrict pb = r.pb;
  const float* __restrict ph = r.ph;
  const float* __restrict qr = r.qr;
  const float* __restrict qg = r.qg;
  const float* __restrict qb = r.qb;
  const float* __restrict qh = r.qh;
  float* __restrict pn = r.pn;
  float* __restrict pd = r.pd;
  if (r.qn) {
    float* __restrict qn = r.qn;
    float* __restrict qd = r.qd;
#pragma omp simd
    for (int i = 0; i < n; ++i) {
      const float w = bilateral_weight(spatial, qr[i] - pr[i], qg[i] - pg[i], qb[i] - pb[i], k);
      pn[i] += w * qh[i];
      pd[i] += w;
      qn[i] += w * ph[i];
      qd[i] += w;
    }
  } else {
#pragma omp simd
    for (int i = 0; i < n; ++i) {
      const float w = bilateral_weight(spatial, qr[i] - pr[i], qg[i] - pg[i], qb[i] - pb[i], k);
      pn[i] += w * qh[i];
      pd[i] += w;
    }
  }
}

// Colour planes R, G, B of an 8-bit RGB image, as floats (contiguous loads per plane).
std::vector<float> colour_planes(const cv::Mat& rgb) {
  const size_t P = static_cast<size_t>(rgb.rows) * rgb.cols;
  std::vector<float> planes(3 * P);
  for (int y = 0; y < rgb.rows; ++y) {
    const uint8_t* row = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x)
      for (int c = 0; c < 3; ++c) planes[c * P + static_cast<size_t>(y) * rgb.cols + x] = row[3 * x + c];
  }
  return planes;
}

// Window rows with their spatial weights reversed and zero-padded by L − 1 (kept in `store`).
template <typename RowT>
std::vector<WindowRow> reversed_rows(const std::vector<RowT>& window, std::vector<std::vector<float>>& store) {
  constexpr int L = kLanes;
  store.assign(window.size(), {});
  std::vector<WindowRow> rows;
  for (size_t r = 0; r < window.size(); ++r) {
    const RowT& row = window[r];
    const int n = row.dx_max - row.dx_min + 1;
    store[r].assign(n + 2 * (L - 1), 0.0f);
    for (int dx = row.dx_min; dx <= row.dx_max; ++dx) store[r][L - 1 + row.dx_max - dx] = row.spatial[dx - row.dx_min];
    rows.push_back({row.dy, row.dx_min, row.dx_max, store[r].data()});
  }
  return rows;
}

}  // namespace

void JointBilateralUpsampler::build_table() {
  const int KX = ax_.cells, KY = ay_.cells, KB = KX * KY, L = kLanes;
  // Every entry is written below, so the buffer starts uninitialised.
  table_size_ = static_cast<size_t>(H_) * W_ * KB;
  table_ = allocate_large_floats(table_size_);
  std::vector<float> l0(W_), l1(W_);
  for (int x = 0; x < W_; ++x) {
    // Where the bilinear pair is clamped to one column (off = 0) all weight stays on it.
    l1[x] = ax_.off[x] == 1 ? ax_.l1[x] : 0.0f;
    l0[x] = ax_.off[x] == 1 ? ax_.l0[x] : 1.0f;
  }
  const size_t P = static_cast<size_t>(H_) * W_;
  const std::vector<float> planes = colour_planes(rgb_);
  std::vector<std::vector<float>> rev;
  const std::vector<WindowRow> rows = reversed_rows(rows_, rev);
  int max_dx = 0;
  for (const Row& row : rows_) max_dx = std::max({max_dx, -row.dx_min, row.dx_max});
  // Grid columns a block of L pixels can touch, relative to its first pixel's block,
  // plus one for the a+1 of the last column.
  int NXC = KX;
  for (int px0 = 0; px0 < W_; px0 += L)
    NXC = std::max({NXC, ax_.i0[std::min(W_ - 1, px0 + L - 1 + max_dx)] - ax_.lo[px0] + 2,
                    ax_.lo[std::min(px0 + L - 1, W_ - 1)] - ax_.lo[px0] + KX});
  const float k = range_k2(params_.range_sigma);
  const TableInput in{planes.data(), planes.data() + P, planes.data() + 2 * P, ax_.i0.data(), l0.data(), l1.data(),
                      H_, W_, KY, NXC, k};
  const std::vector<int> cy_off(ay_.off.begin(), ay_.off.end());
#pragma omp parallel num_threads(num_threads())
  {
    std::vector<float> accY(static_cast<size_t>(KY + 1) * NXC * L), accX(static_cast<size_t>(NXC + 1) * L, 0.0f);
    std::vector<double> wsum(L);
#pragma omp for schedule(dynamic, 2)
    for (int py = 0; py < H_; ++py) {
      for (int px0 = 0; px0 < W_; px0 += L) {
        const int lo_blk = ax_.lo[px0];
        table_block(in, rows.data(), static_cast<int>(rows.size()), py, px0, lo_blk, ay_.lo[py], ay_.i0.data(),
                    cy_off.data(), ay_.l0.data(), ay_.l1.data(), accY.data(), accX.data(), wsum.data());
        for (int j = 0; j < L && px0 + j < W_; ++j) {
          const int px = px0 + j, shift = ax_.lo[px] - lo_blk;
          const float inv = wsum[j] > 0 ? static_cast<float>(1.0 / wsum[j]) : 0.0f;
          float* C = &table_[(static_cast<size_t>(py) * W_ + px) * KB];
          for (int ky = 0; ky < KY; ++ky)
            for (int kx = 0; kx < KX; ++kx)
              C[ky * KX + kx] = accY[(static_cast<size_t>(ky) * NXC + kx + shift) * L + j] * inv;
        }
      }
    }
  }
}

cv::Mat JointBilateralUpsampler::apply(const cv::Mat& low) const {
  if (low.rows != h_ || low.cols != w_ || low.type() != CV_32F) throw Error("upsampling: map has the wrong size");
  if (!tabulated()) return apply_direct(low);
  const int KX = ax_.cells, KY = ay_.cells, KB = KX * KY;
  // Pad so that every block read stays inside.
  cv::Mat padded = cv::Mat::zeros(h_ + KY, w_ + KX, CV_32F);
  low.copyTo(padded(cv::Rect(0, 0, w_, h_)));
  cv::Mat out(H_, W_, CV_32F);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int py = 0; py < H_; ++py) {
    float* o = out.ptr<float>(py);
    const int cy_lo = ay_.lo[py];
    for (int px = 0; px < W_; ++px) {
      const float* C = &table_[(static_cast<size_t>(py) * W_ + px) * KB];
      const int cx_lo = ax_.lo[px];
      float s = 0;
      for (int ky = 0; ky < KY; ++ky) {
        const float* l = padded.ptr<float>(cy_lo + ky) + cx_lo;
        const float* c = C + ky * KX;
        for (int kx = 0; kx < KX; ++kx) s += c[kx] * l[kx];
      }
      o[px] = s;
    }
  }
  return out;
}

cv::Mat JointBilateralUpsampler::apply_untabulated(const cv::Mat& low) const {
  if (low.rows != h_ || low.cols != w_ || low.type() != CV_32F) throw Error("upsampling: map has the wrong size");
  const cv::Mat hi = upsample_bilinear(low, H_, W_);
  const std::vector<float> planes = colour_planes(rgb_);
  const size_t P = static_cast<size_t>(H_) * W_;
  const float* C[3] = {planes.data(), planes.data() + P, planes.data() + 2 * P};
  const float* Hm = hi.ptr<float>();
  const float k = range_k2(params_.range_sigma);
  // The window's offsets: the centre, dy = 0 (one end), dy > 0 (both ends). The
  // window is symmetric (rows ±dy span ±dx alike, with equal weights), so the rows
  // with dy < 0 are the mirror images of those with dy > 0.
  struct Offset {
    int dy, dx;
    float spatial;
  };
  std::vector<Offset> offsets;
  float centre = 0;
  int reach = 0;  // the largest dy
  for (const Row& row : rows_) {
    if (row.dy < 0) continue;
    reach = std::max(reach, row.dy);
    for (int dx = row.dx_min; dx <= row.dx_max; ++dx) {
      const float sp = row.spatial[static_cast<size_t>(dx - row.dx_min)];
      if (row.dy == 0 && dx == 0) centre = sp;
      else if (row.dy > 0 || dx > 0) offsets.push_back({row.dy, dx, sp});
    }
  }
  // Bands of rows, each with its own sums for its rows and the `reach` rows below
  // (the far ends of its pairs); added up once all bands are done.
  const int T = std::max(1, num_threads());
  const int n_bands = std::max(1, std::min(4 * T, H_ / std::max(1, 2 * reach + 1)));
  std::vector<std::vector<float>> band_sums(static_cast<size_t>(n_bands));
#pragma omp parallel for num_threads(T) schedule(dynamic, 1)
  for (int b = 0; b < n_bands; ++b) {
    const int y0 = H_ * b / n_bands, y1 = H_ * (b + 1) / n_bands, y_end = std::min(H_, y1 + reach);
    const size_t rows_here = static_cast<size_t>(y_end - y0);
    std::vector<float>& sums = band_sums[static_cast<size_t>(b)];
    sums.assign(2 * rows_here * W_, 0.0f);
    float* num = sums.data();
    float* den = sums.data() + rows_here * W_;
    for (int py = y0; py < y1; ++py) {
      const size_t pi = static_cast<size_t>(py) * W_, pl = static_cast<size_t>(py - y0) * W_;
      for (int x = 0; x < W_; ++x) {
        num[pl + x] += centre * Hm[pi + x];
        den[pl + x] += centre;
      }
      for (const Offset& o : offsets) {
        const int qy = py + o.dy;
        if (qy >= H_) continue;
        const int x0 = std::max(0, -o.dx), x1 = std::min(W_, W_ - o.dx);
        if (x0 >= x1) continue;
        const size_t p = pi + x0, q = static_cast<size_t>(qy) * W_ + x0 + o.dx;
        const size_t lp = pl + x0, lq = static_cast<size_t>(qy - y0) * W_ + x0 + o.dx;
        const bool both = o.dy > 0;
        const PairRows r{C[0] + p,   C[1] + p,   C[2] + p,   Hm + p,    C[0] + q,
                         C[1] + q,   C[2] + q,   Hm + q,     num + lp,  den + lp,
                         both ? num + lq : nullptr,          both ? den + lq : nullptr};
        weigh_pairs(r, x1 - x0, o.spatial, k);
        if (!both) {  // the mirror offset (0, -dx): p + dx weighs p
          const PairRows m{C[0] + q, C[1] + q, C[2] + q, Hm + q, C[0] + p, C[1] + p, C[2] + p, Hm + p,
                           num + lq, den + lq, nullptr,  nullptr};
          weigh_pairs(m, x1 - x0, o.spatial, k);
        }
      }
    }
  }
  cv::Mat num(H_, W_, CV_32F, 0.0f), den(H_, W_, CV_32F, 0.0f);
  for (int b = 0; b < n_bands; ++b) {
    const int y0 = H_ * b / n_bands, y_end = std::min(H_, H_ * (b + 1) / n_bands + reach);
    const size_t rows_here = static_cast<size_t>(y_end - y0), n = rows_here * W_;
    const float* s = band_sums[static_cast<size_t>(b)].data();
    float* nd = num.ptr<float>(y0);
    float* dd = den.ptr<float>(y0);
    for (size_t i = 0; i < n; ++i) {
      nd[i] += s[i];
      dd[i] += s[n + i];
    }
  }
  cv::Mat out(H_, W_, CV_32F);
  const float* nv = num.ptr<float>();
  const float* dv = den.ptr<float>();
  float* ov = out.ptr<float>();
  for (size_t i = 0; i < P; ++i) ov[i] = dv[i] > 0 ? nv[i] / dv[i] : 0.0f;
  return out;
}

cv::Mat JointBilateralUpsampler::apply_direct(const cv::Mat& low) const {
  if (low.rows != h_ || low.cols != w_ || low.type() != CV_32F) throw Error("upsampling: map has the wrong size");
  const cv::Mat hi = upsample_bilinear(low, H_, W_);
  const float* lut = range_lut_ + 255;
  cv::Mat out(H_, W_, CV_32F);
#pragma omp parallel for num_threads(num_threads()) schedule(dynamic, 4)
  for (int py = 0; py < H_; ++py) {
    const uint8_t* prow = rgb_.ptr<uint8_t>(py);
    for (int px = 0; px < W_; ++px) {
      const int pr = prow[3 * px], pg = prow[3 * px + 1], pb = prow[3 * px + 2];
      float sum = 0, wsum = 0;
      for (const Row& row : rows_) {
        const int qy = py + row.dy;
        if (qy < 0 || qy >= H_) continue;
        const uint8_t* qrow = rgb_.ptr<uint8_t>(qy);
        const float* hrow = hi.ptr<float>(qy);
        const int qx0 = std::max(0, px + row.dx_min), qx1 = std::min(W_ - 1, px + row.dx_max);
        // row.spatial[i] is the weight of dx = dx_min + i, i.e. of qx = px + dx_min + i.
        const float* sp = row.spatial.data();
        const int first = px + row.dx_min;
        for (int qx = qx0; qx <= qx1; ++qx) {
          const uint8_t* q = qrow + 3 * qx;
          const float w = sp[qx - first] * ((lut[q[0] - pr] * lut[q[1] - pg]) * lut[q[2] - pb]);
          wsum += w;
          sum += w * hrow[qx];
        }
      }
      out.at<float>(py, px) = sum / wsum;
    }
  }
  return out;
}

}  // namespace m2n2
