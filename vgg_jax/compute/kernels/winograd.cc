// Winograd F(2x2, 3x3) tile transforms for float32 as XLA FFI custom calls (see
// vgg_jax/winograd.py, which does the 16 matrix products between them with XLA's dots).
//
// A 3x3 stride-1 "SAME" convolution of an NHWC map with even height and width is cut into
// 2x2 output tiles, tile p = (n, ty, tx) reading the 4x4 input pixels from (2ty - 1, 2tx - 1)
// (zero outside the map). With B^T, G, A^T of Lavin & Gray (2016):
//   V[s, p, c] = (B^T d B)[s]   (WinogradInput: d the 4x4 input tile of channel c)
//   M[s] = V[s] @ U[s]          (XLA; U = G g G^T, from the 3x3 kernel g)
//   y = A^T M A + bias, ReLU    (WinogradOutput)
// and the gradients are the adjoints of these linear maps:
//   dM = A dy A^T               (WinogradOutputGradient, after the ReLU mask; also d bias)
//   dV[s] = dM[s] @ U[s]^T, dU[s] = V[s]^T @ dM[s]   (XLA)
//   dx = the sum over the tiles that read a pixel of B dV B^T   (WinogradInputGradient)
// s = 4i + j indexes the 4x4 transformed tile; V, M, dM, dV are (16, P, channels) arrays.
// Every transform is a pass over memory, vectorised over the channels (contiguous in NHWC
// and in the transformed arrays) and parallel over rows of tiles (OpenMP).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#define VGG_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// One tile's input transform: d[4i + j] points at input pixel (i, j)'s channels (or zeros).
VGG_SIMD_CLONES void InputTile(const float* const* d, float* v, int64_t stride, int64_t c) {
  const float *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3], *d4 = d[4], *d5 = d[5],
              *d6 = d[6], *d7 = d[7], *d8 = d[8], *d9 = d[9], *d10 = d[10], *d11 = d[11],
              *d12 = d[12], *d13 = d[13], *d14 = d[14], *d15 = d[15];
#pragma omp simd
  for (int64_t i = 0; i < c; ++i) {
    float t[4][4];  // B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3
    const float r0[4] = {d0[i], d1[i], d2[i], d3[i]}, r1[4] = {d4[i], d5[i], d6[i], d7[i]},
                r2[4] = {d8[i], d9[i], d10[i], d11[i]}, r3[4] = {d12[i], d13[i], d14[i], d15[i]};
    for (int j = 0; j < 4; ++j) {
      t[0][j] = r0[j] - r2[j];
      t[1][j] = r1[j] + r2[j];
      t[2][j] = r2[j] - r1[j];
      t[3][j] = r1[j] - r3[j];
    }
    for (int r = 0; r < 4; ++r) {  // (B^T d) B: the same on the columns
      v[(4 * r + 0) * stride + i] = t[r][0] - t[r][2];
      v[(4 * r + 1) * stride + i] = t[r][1] + t[r][2];
      v[(4 * r + 2) * stride + i] = t[r][2] - t[r][1];
      v[(4 * r + 3) * stride + i] = t[r][1] - t[r][3];
    }
  }
}

// One tile's output transform: y[2a + b] points at output pixel (a, b)'s channels.
VGG_SIMD_CLONES void OutputTile(const float* m, int64_t stride, const float* bias, bool relu,
                                float* const* y, int64_t k) {
  const float lowest = relu ? 0.f : -std::numeric_limits<float>::infinity();
  float *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];
#pragma omp simd
  for (int64_t i = 0; i < k; ++i) {
    float e[4][4], t[2][4];
    for (int s = 0; s < 16; ++s) e[s / 4][s % 4] = m[s * stride + i];
    for (int j = 0; j < 4; ++j) {  // A^T M: rows m0 + m1 + m2, m1 - m2 - m3
      t[0][j] = e[0][j] + e[1][j] + e[2][j];
      t[1][j] = e[1][j] - e[2][j] - e[3][j];
    }
    float o[4] = {t[0][0] + t[0][1] + t[0][2], t[0][1] - t[0][2] - t[0][3],
                  t[1][0] + t[1][1] + t[1][2], t[1][1] - t[1][2] - t[1][3]};
    for (int q = 0; q < 4; ++q) o[q] = std::max(o[q] + bias[i], lowest);
    y0[i] = o[0];
    y1[i] = o[1];
    y2[i] = o[2];
    y3[i] = o[3];
  }
}

// One tile's output-gradient transform A dy A^T (dy masked where y <= 0 if kMask); adds
// the tile's dy to dbias.
template <bool kMask>
inline __attribute__((always_inline)) void OutputGradientLoop(
    const float* const* dy, const float* const* y, float* dm, int64_t stride, float* dbias,
    int64_t k) {
  const float *g0 = dy[0], *g1 = dy[1], *g2 = dy[2], *g3 = dy[3];
  const float *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];
#pragma omp simd
  for (int64_t i = 0; i < k; ++i) {
    float a = g0[i], b = g1[i], c = g2[i], d = g3[i];
    if constexpr (kMask) {
      a = y0[i] > 0.f ? a : 0.f;
      b = y1[i] > 0.f ? b : 0.f;
      c = y2[i] > 0.f ? c : 0.f;
      d = y3[i] > 0.f ? d : 0.f;
    }
    dbias[i] += a + b + c + d;
    // A g with A = [1 0; 1 1; 1 -1; 0 -1] on the rows, then on the columns.
    const float rows[4][2] = {{a, b}, {a + c, b + d}, {a - c, b - d}, {-c, -d}};
    for (int r = 0; r < 4; ++r) {
      const float e = rows[r][0], f = rows[r][1];
      dm[(4 * r + 0) * stride + i] = e;
      dm[(4 * r + 1) * stride + i] = e + f;
      dm[(4 * r + 2) * stride + i] = e - f;
      dm[(4 * r + 3) * stride + i] = -f;
    }
  }
}

VGG_SIMD_CLONES void OutputGradientTile(const float* const* dy, const float* const* y,
                                        bool mask, float* dm, int64_t stride, float* dbias,
                                        int64_t k) {
  if (mask)
    OutputGradientLoop<true>(dy, y, dm, stride, dbias, k);
  else
    OutputGradientLoop<false>(dy, y, dm, stride, dbias, k);
}

// One tile's input-gradient transform B dV B^T, added to the 16 pixels it read.
VGG_SIMD_CLONES void InputGradientTile(const float* dv, int64_t stride, float* const* dx,
                                       int64_t c) {
  float *x0 = dx[0], *x1 = dx[1], *x2 = dx[2], *x3 = dx[3], *x4 = dx[4], *x5 = dx[5],
        *x6 = dx[6], *x7 = dx[7], *x8 = dx[8], *x9 = dx[9], *x10 = dx[10], *x11 = dx[11],
        *x12 = dx[12], *x13 = dx[13], *x14 = dx[14], *x15 = dx[15];
#pragma omp simd
  for (int64_t i = 0; i < c; ++i) {
    float e[4][4], t[4][4];
    for (int s = 0; s < 16; ++s) e[s / 4][s % 4] = dv[s * stride + i];
    // B v = (v0, v1 - v2 + v3, v1 + v2 - v0, -v3) on the rows, then on the columns.
    for (int j = 0; j < 4; ++j) {
      t[0][j] = e[0][j];
      t[1][j] = e[1][j] - e[2][j] + e[3][j];
      t[2][j] = e[1][j] + e[2][j] - e[0][j];
      t[3][j] = -e[3][j];
    }
    float o[16];
    for (int r = 0; r < 4; ++r) {
      o[4 * r + 0] = t[r][0];
      o[4 * r + 1] = t[r][1] - t[r][2] + t[r][3];
      o[4 * r + 2] = t[r][1] + t[r][2] - t[r][0];
      o[4 * r + 3] = -t[r][3];
    }
    x0[i] += o[0];
    x1[i] += o[1];
    x2[i] += o[2];
    x3[i] += o[3];
    x4[i] += o[4];
    x5[i] += o[5];
    x6[i] += o[6];
    x7[i] += o[7];
    x8[i] += o[8];
    x9[i] += o[9];
    x10[i] += o[10];
    x11[i] += o[11];
    x12[i] += o[12];
    x13[i] += o[13];
    x14[i] += o[14];
    x15[i] += o[15];
  }
}

struct Map {
  int64_t n, h, w, c, th, tw, tiles;
};

ffi::Error CheckMap(ffi::Span<const int64_t> d, Map* map) {
  if (d.size() != 4 || d[1] % 2 || d[2] % 2)
    return ffi::Error::InvalidArgument("vgg_jax winograd: an NHWC map of even height and width");
  *map = {d[0], d[1], d[2], d[3], d[1] / 2, d[2] / 2, d[0] * (d[1] / 2) * (d[2] / 2)};
  return ffi::Error::Success();
}

// Calls body(b, ty, tx, p, rows, cols) for every tile, a row of tiles per task; rows[i] and
// cols[j] are the tile's pixel rows and columns (-1 outside the map). parity 0 or 1: only
// the rows of tiles with ty % 2 == parity (whose pixel rows do not overlap), -1: all.
template <typename Body>
void ForEachTile(const Map& m, int parity, Body&& body) {
  const int64_t step = parity < 0 ? 1 : 2, per_image = (m.th - std::max(parity, 0) + step - 1) / step;
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < m.n * per_image; ++task) {
    const int64_t b = task / per_image, ty = std::max(parity, 0) + (task % per_image) * step;
    int64_t rows[4], cols[4];
    for (int i = 0; i < 4; ++i) {
      const int64_t r = 2 * ty - 1 + i;
      rows[i] = r >= 0 && r < m.h ? r : -1;
    }
    for (int64_t tx = 0; tx < m.tw; ++tx) {
      for (int j = 0; j < 4; ++j) {
        const int64_t q = 2 * tx - 1 + j;
        cols[j] = q >= 0 && q < m.w ? q : -1;
      }
      body(b, ty, tx, (b * m.th + ty) * m.tw + tx, rows, cols);
    }
  }
}

ffi::Error WinogradInput(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> v) {
  Map m;
  if (auto e = CheckMap(x.dimensions(), &m); e.failure()) return e;
  const float* in = x.typed_data();
  float* out = v->typed_data();
  const std::vector<float> zeros(m.c, 0.f);
  ForEachTile(m, -1, [&](int64_t b, int64_t, int64_t, int64_t p, const int64_t* rows,
                         const int64_t* cols) {
    const float* d[16];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        d[4 * i + j] = rows[i] < 0 || cols[j] < 0
                           ? zeros.data()
                           : in + ((b * m.h + rows[i]) * m.w + cols[j]) * m.c;
    InputTile(d, out + p * m.c, m.tiles * m.c, m.c);
  });
  return ffi::Error::Success();
}

ffi::Error WinogradOutput(ffi::Buffer<ffi::F32> mm, ffi::Buffer<ffi::F32> bias,
                          ffi::ResultBuffer<ffi::F32> y, bool relu) {
  Map m;
  if (auto e = CheckMap(y->dimensions(), &m); e.failure()) return e;
  const float* in = mm.typed_data();
  float* out = y->typed_data();
  ForEachTile(m, -1, [&](int64_t b, int64_t ty, int64_t tx, int64_t p, const int64_t*,
                         const int64_t*) {
    float* o[4];
    for (int q = 0; q < 4; ++q)
      o[q] = out + ((b * m.h + 2 * ty + q / 2) * m.w + 2 * tx + q % 2) * m.c;
    OutputTile(in + p * m.c, m.tiles * m.c, bias.typed_data(), relu, o, m.c);
  });
  return ffi::Error::Success();
}

// dy and y (the layer's output, for the ReLU mask; ignored unless relu) -> dM and d bias.
ffi::Error WinogradOutputGradient(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> y,
                                  ffi::ResultBuffer<ffi::F32> dm,
                                  ffi::ResultBuffer<ffi::F32> dbias, bool relu) {
  Map m;
  if (auto e = CheckMap(dy.dimensions(), &m); e.failure()) return e;
  const float *g = dy.typed_data(), *out = y.typed_data();
  float* result = dm->typed_data();
  std::vector<float> partial(static_cast<size_t>(omp_get_max_threads()) * m.c, 0.f);
  ForEachTile(m, -1, [&](int64_t b, int64_t ty, int64_t tx, int64_t p, const int64_t*,
                         const int64_t*) {
    const float *gp[4], *yp[4];
    for (int q = 0; q < 4; ++q) {
      const int64_t at = ((b * m.h + 2 * ty + q / 2) * m.w + 2 * tx + q % 2) * m.c;
      gp[q] = g + at;
      yp[q] = out + at;
    }
    OutputGradientTile(gp, yp, relu, result + p * m.c, m.tiles * m.c,
                       partial.data() + omp_get_thread_num() * m.c, m.c);
  });
  float* db = dbias->typed_data();
  std::fill(db, db + m.c, 0.f);
  for (size_t t = 0; t < partial.size(); t += m.c)
    for (int64_t i = 0; i < m.c; ++i) db[i] += partial[t + i];
  return ffi::Error::Success();
}

ffi::Error WinogradInputGradient(ffi::Buffer<ffi::F32> dv, ffi::ResultBuffer<ffi::F32> dx) {
  Map m;
  if (auto e = CheckMap(dx->dimensions(), &m); e.failure()) return e;
  const float* in = dv.typed_data();
  float* out = dx->typed_data();
  std::vector<float> discard(static_cast<size_t>(omp_get_max_threads()) * m.c);
  // Tiles two rows apart read disjoint pixel rows: even rows of tiles first (each zeroing
  // its pixel rows, down to the next even row's or the map's end), then the odd ones.
  for (int parity = 0; parity < 2; ++parity)
    ForEachTile(m, parity, [&](int64_t b, int64_t ty, int64_t tx, int64_t p,
                               const int64_t* rows, const int64_t* cols) {
      if (parity == 0 && tx == 0) {
        const int64_t first = std::max<int64_t>(0, 2 * ty - 1),
                      end = ty + 2 >= m.th ? m.h : 2 * ty + 3;
        std::memset(out + (b * m.h + first) * m.w * m.c, 0,
                    (end - first) * m.w * m.c * sizeof(float));
      }
      float* sink = discard.data() + omp_get_thread_num() * m.c;
      float* o[16];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j)
          o[4 * i + j] = rows[i] < 0 || cols[j] < 0
                             ? sink
                             : out + ((b * m.h + rows[i]) * m.w + cols[j]) * m.c;
      InputGradientTile(in + p * m.c, m.tiles * m.c, o, m.c);
    });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VggWinogradInput, WinogradInput,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggWinogradOutput, WinogradOutput,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggWinogradOutputGradient, WinogradOutputGradient,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggWinogradInputGradient, WinogradInputGradient,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
