// Fused instance norm -> ReLU -> 2x2 average pooling for CPU (the field's ConvNet block), forward
// and first-order backward, on channels-last (NHWC) memory.
//
// Why: inductor and eager PyTorch run these three ops as several full passes over the
// conv output (52 MB per 100 Fashion-MNIST images at width 128), each streaming from DRAM.
// Here one image at a time (H*W*C values, 512 KB at 32x32x128: it stays in L2) is read from
// memory once per direction: forward = mean pass, variance pass, normalise+ReLU+pool pass;
// backward = one reduction pass (sum of dL/dz and of dL/dz * xhat per channel) and one pass
// writing dL/dx. Every loop runs over channels innermost (contiguous in NHWC: vectorised).
//
// Same function as GroupNorm(C, C, affine) -> ReLU -> AvgPool2d(2, 2) (floor mode: an odd last
// row/column is dropped by the pooling but counted in the statistics), biased variance, eps
// inside the square root. Storage types float, double and bfloat16 (math in float for bf16;
// weight, bias, mean and rstd are in the math type).
#include <torch/extension.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

template <typename T> struct Math { using type = T; };
template <> struct Math<c10::BFloat16> { using type = float; };

// Loads and stores between storage and math types. For bfloat16 these are plain bit operations
// (round to nearest even on the way out) so that the loops vectorise; NaN/inf pass through
// (a NaN whose payload sits in the low bits can round to inf: the caller checks finiteness).
template <typename A> inline A load(A v) { return v; }
inline float load(c10::BFloat16 v) {
  uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
template <typename T, typename A> inline T store(A v) { return static_cast<T>(v); }

// Copy a row of C values from a cache-resident scratch buffer to memory that will not be read
// again soon (dL/dx: the next reader is the convolution's backward), with streaming stores where
// the CPU has them, so the destination is not first read into the cache.
template <typename T> inline void stream_row(T* __restrict__ dst, const T* __restrict__ src,
                                             int64_t n) {
  std::memcpy(dst, src, n * sizeof(T));
}
#if defined(__AVX512F__)
template <> inline void stream_row<float>(float* __restrict__ dst, const float* __restrict__ src,
                                          int64_t n) {
  if ((reinterpret_cast<uintptr_t>(dst) & 63) != 0 || (n & 15) != 0) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  for (int64_t k = 0; k < n; k += 16) _mm512_stream_ps(dst + k, _mm512_loadu_ps(src + k));
}
#endif
template <> inline c10::BFloat16 store<c10::BFloat16, float>(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits += 0x7fffu + ((bits >> 16) & 1u);
  c10::BFloat16 out;
  out.x = static_cast<uint16_t>(bits >> 16);
  return out;
}

// One image: statistics of x (H*W*C values, NHWC) into m, r; pooled output into oi.
template <typename T, typename A, typename TO = T>
inline void forward_image(const T* __restrict__ xi, const A* __restrict__ Wt,
                          const A* __restrict__ Bt, TO* __restrict__ oi, A* __restrict__ m,
                          A* __restrict__ r, A* __restrict__ s, A* __restrict__ a,
                          A* __restrict__ bb, int64_t C, int64_t H, int64_t W, double eps) {
  const int64_t Ho = H / 2, Wo = W / 2, HW = H * W;
  for (int64_t c = 0; c < C; ++c) s[c] = A(0);
  for (int64_t p = 0; p < HW; ++p) {
    const T* __restrict__ xp = xi + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) s[c] += load(xp[c]);
  }
  for (int64_t c = 0; c < C; ++c) { m[c] = s[c] / A(HW); s[c] = A(0); }
  for (int64_t p = 0; p < HW; ++p) {
    const T* __restrict__ xp = xi + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) { A d = load(xp[c]) - m[c]; s[c] += d * d; }
  }
  for (int64_t c = 0; c < C; ++c) {
    r[c] = A(1) / std::sqrt(s[c] / A(HW) + A(eps));
    a[c] = r[c] * Wt[c];
    bb[c] = Bt[c] - m[c] * a[c];
  }
  for (int64_t i = 0; i < Ho; ++i) {
    for (int64_t j = 0; j < Wo; ++j) {
      const T* __restrict__ x00 = xi + ((2 * i) * W + 2 * j) * C;
      const T* __restrict__ x01 = x00 + C;
      const T* __restrict__ x10 = x00 + W * C;
      const T* __restrict__ x11 = x10 + C;
      TO* __restrict__ op = oi + (i * Wo + j) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        A v = std::max(load(x00[c]) * a[c] + bb[c], A(0)) +
              std::max(load(x01[c]) * a[c] + bb[c], A(0)) +
              std::max(load(x10[c]) * a[c] + bb[c], A(0)) +
              std::max(load(x11[c]) * a[c] + bb[c], A(0));
        op[c] = store<TO, A>(A(0.25) * v);
      }
    }
  }
}

template <typename T, typename A>
void forward_kernel(const T* X, const A* Wt, const A* Bt, T* O, A* M, A* R, int64_t N, int64_t C,
                    int64_t H, int64_t W, double eps) {
  const int64_t HW = H * W, HoWo = (H / 2) * (W / 2);
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<A> buf(3 * C);
    for (int64_t n = n0; n < n1; ++n)
      forward_image<T, A>(X + n * HW * C, Wt, Bt, O + n * HoWo * C, M + n * C, R + n * C,
                          buf.data(), buf.data() + C, buf.data() + 2 * C, C, H, W, eps);
  });
}

// dL/dx of y = pool(relu(z)), z = xhat * w + b, xhat = (x - m) * r, with gz = dL/dz:
//   dL/dx = r * w * (gz - mean(gz) - xhat * mean(gz * xhat)),  dL/dw = sum gz * xhat,
//   dL/db = sum gz.
// One image; dL/dx rows go to gxi (streamed when `stream`, else plain stores); the image's
// dL/db, dL/dw are added to pa, pb. buf holds 7 * C values of scratch.
template <typename T, typename A, typename TG = T>
inline void backward_image(const TG* __restrict__ gi, const T* __restrict__ xi,
                           const A* __restrict__ m, const A* __restrict__ r,
                           const A* __restrict__ Wt, const A* __restrict__ Bt,
                           T* __restrict__ gxi, A* __restrict__ pa, A* __restrict__ pb,
                           A* __restrict__ buf, T* __restrict__ row, bool stream, int64_t C,
                           int64_t H, int64_t W) {
  const int64_t Ho = H / 2, Wo = W / 2, HW = H * W;
  A* __restrict__ a = buf;          // z = x * a + bb
  A* __restrict__ bb = a + C;
  A* __restrict__ sg = bb + C;      // 4 * sum gz
  A* __restrict__ sgx = sg + C;     // 4 * sum gz * (x - m)
  A* __restrict__ c0 = sgx + C;     // dL/dx = [z > 0] * q * g + x * c1 + c0
  A* __restrict__ c1 = c0 + C;
  A* __restrict__ q = c1 + C;
  for (int64_t c = 0; c < C; ++c) {
    a[c] = r[c] * Wt[c];
    bb[c] = Bt[c] - m[c] * a[c];
    sg[c] = A(0);
    sgx[c] = A(0);
  }
  // pass 1: per output pixel, its four inputs share one incoming gradient g (gz = g / 4)
  for (int64_t i = 0; i < Ho; ++i) {
    for (int64_t j = 0; j < Wo; ++j) {
      const TG* __restrict__ gp = gi + (i * Wo + j) * C;
      const T* __restrict__ x00 = xi + ((2 * i) * W + 2 * j) * C;
      const T* __restrict__ x01 = x00 + C;
      const T* __restrict__ x10 = x00 + W * C;
      const T* __restrict__ x11 = x10 + C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const A g = load(gp[c]);
        const A v00 = load(x00[c]), v01 = load(x01[c]);
        const A v10 = load(x10[c]), v11 = load(x11[c]);
        const A g00 = v00 * a[c] + bb[c] > A(0) ? g : A(0);
        const A g01 = v01 * a[c] + bb[c] > A(0) ? g : A(0);
        const A g10 = v10 * a[c] + bb[c] > A(0) ? g : A(0);
        const A g11 = v11 * a[c] + bb[c] > A(0) ? g : A(0);
        const A mc = m[c];
        sg[c] += (g00 + g01) + (g10 + g11);
        sgx[c] += (g00 * (v00 - mc) + g01 * (v01 - mc)) + (g10 * (v10 - mc) + g11 * (v11 - mc));
      }
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    const A db = A(0.25) * sg[c];
    const A dw = A(0.25) * r[c] * sgx[c];  // sum gz * xhat
    pa[c] += db;
    pb[c] += dw;
    const A rw = r[c] * Wt[c];
    const A k1 = db / A(HW), k2 = dw / A(HW);
    c1[c] = -rw * k2 * r[c];
    c0[c] = -rw * k1 + rw * k2 * r[c] * m[c];
    q[c] = A(0.25) * rw;
  }
  // pass 2: dL/dx (the image is still in cache)
  for (int64_t i = 0; i < H; ++i) {
    for (int64_t j = 0; j < W; ++j) {
      const T* __restrict__ xp = xi + (i * W + j) * C;
      T* __restrict__ gxp = gxi + (i * W + j) * C;
      T* __restrict__ dst = stream ? row : gxp;
      if (i >= 2 * Ho || j >= 2 * Wo) {  // dropped by the pooling: no gradient from above
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dst[c] = store<T, A>(load(xp[c]) * c1[c] + c0[c]);
      } else {
        const TG* __restrict__ gp = gi + ((i / 2) * Wo + j / 2) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const A v = load(xp[c]);
          const A g = v * a[c] + bb[c] > A(0) ? load(gp[c]) * q[c] : A(0);
          dst[c] = store<T, A>(g + v * c1[c] + c0[c]);
        }
      }
      if (stream) stream_row(gxp, row, C);
    }
  }
}

template <typename T, typename A>
void backward_kernel(const T* G, const T* X, const A* M, const A* R, const A* Wt, const A* Bt,
                     T* GX, A* P, int64_t N, int64_t C, int64_t H, int64_t W) {
  const int64_t HW = H * W, HoWo = (H / 2) * (W / 2);
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    A* pa = P + at::get_thread_num() * 2 * C;  // this thread's dL/db, dL/dw
    std::vector<A> buf(7 * C);
    std::vector<T> row(C);
    for (int64_t n = n0; n < n1; ++n)
      backward_image<T, A>(G + n * HoWo * C, X + n * HW * C, M + n * C, R + n * C, Wt, Bt,
                           GX + n * HW * C, pa, pa + C, buf.data(), row.data(), true, C, H, W);
#if defined(__AVX512F__)
    _mm_sfence();  // streaming stores visible before the caller reads dL/dx
#endif
  });
}

// ---- double backward (the backward of the backward, for unrolled training: MTT) ----
// The first-order backward maps (g = dL/dy, x, w) to (dL/dx, dL/dw, dL/db). Given the
// gradients (vx, vw, vb) arriving at those three outputs, this returns their gradients with
// respect to g, x and w (b enters only through the ReLU mask: zero almost everywhere). Per
// image and channel, with xhat = (x - m) r, gn = [z > 0] * up(g) / 4 (0 on rows/columns the
// pooling dropped), N = H * W and the sums
//   Ab = mean(vx), Axb = mean(vx xhat), Sag = sum(vx gn), Sg = sum(gn), Sxg = sum(xhat gn),
//   A = N Axb, B = w Sxg, S1 = w (Sag - Ab Sg):
//   d/dg = pool([z > 0] * (w r vx + xhat (vw - w r Axb) + vb - w r Ab))   (pool = 2x2 mean)
//   d/dw = sum over images of r (Sag - Ab Sg - Axb Sxg)
//   d/dx = al vx + be gn + ga xhat + de, with k = r^2 / N:
//     al = -k B,  be = -k A w + vw r,  ga = k (3 B Axb - S1) - vw r Sxg / N,
//     de = k (B Ab + A w Sg / N) - vw r Sg / N.
// Two passes over each image (reductions; then d/dx and d/dg), the image staying in cache.
template <typename T, typename A>
inline void double_backward_image(const T* __restrict__ gi, const T* __restrict__ xi,
                                  const T* __restrict__ vi, const A* __restrict__ m,
                                  const A* __restrict__ r, const A* __restrict__ Wt,
                                  const A* __restrict__ Bt, const A* __restrict__ VW,
                                  const A* __restrict__ VB, T* __restrict__ dgi,
                                  T* __restrict__ dxi, A* __restrict__ pw, A* __restrict__ buf,
                                  int64_t C, int64_t H, int64_t W) {
  const int64_t Ho = H / 2, Wo = W / 2, HW = H * W;
  A* __restrict__ a = buf;         // z = x * a + bb
  A* __restrict__ bb = a + C;
  A* __restrict__ sa = bb + C;     // sum vx
  A* __restrict__ sax = sa + C;    // sum vx xhat
  A* __restrict__ sag = sax + C;   // sum vx gn
  A* __restrict__ sg = sag + C;    // sum gn
  A* __restrict__ sxg = sg + C;    // sum xhat gn
  A* __restrict__ ka = sxg + C;    // d/dg (before masking): ka vx + kx xhat + k0
  A* __restrict__ kx = ka + C;
  A* __restrict__ k0 = kx + C;
  A* __restrict__ al = k0 + C;     // d/dx = al vx + be gn + ga xhat + de
  A* __restrict__ be = al + C;
  A* __restrict__ ga = be + C;
  A* __restrict__ de = ga + C;
  for (int64_t c = 0; c < C; ++c) {
    a[c] = r[c] * Wt[c];
    bb[c] = Bt[c] - m[c] * a[c];
    sa[c] = sax[c] = sag[c] = sg[c] = sxg[c] = A(0);
  }
  // pass 1: the sums
  for (int64_t i = 0; i < H; ++i) {
    for (int64_t j = 0; j < W; ++j) {
      const int64_t off = (i * W + j) * C;
      const T* __restrict__ xp = xi + off;
      const T* __restrict__ vp = vi + off;
      if (i >= 2 * Ho || j >= 2 * Wo) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const A v = load(vp[c]);
          sa[c] += v;
          sax[c] += v * ((load(xp[c]) - m[c]) * r[c]);
        }
      } else {
        const T* __restrict__ gp = gi + ((i / 2) * Wo + j / 2) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const A v = load(vp[c]), xv = load(xp[c]);
          const A xh = (xv - m[c]) * r[c];
          const A gn = xv * a[c] + bb[c] > A(0) ? A(0.25) * load(gp[c]) : A(0);
          sa[c] += v;
          sax[c] += v * xh;
          sag[c] += v * gn;
          sg[c] += gn;
          sxg[c] += xh * gn;
        }
      }
    }
  }
  const A invN = A(1) / A(HW);
  for (int64_t c = 0; c < C; ++c) {
    const A w = Wt[c], rc = r[c], k = rc * rc * invN;
    const A Ab = sa[c] * invN, Axb = sax[c] * invN, Af = sax[c];
    const A B = w * sxg[c], S1 = w * (sag[c] - Ab * sg[c]);
    pw[c] += rc * (sag[c] - Ab * sg[c] - Axb * sxg[c]);
    ka[c] = w * rc;
    kx[c] = VW[c] - w * rc * Axb;
    k0[c] = VB[c] - w * rc * Ab;
    al[c] = -k * B;
    be[c] = -k * Af * w + VW[c] * rc;
    ga[c] = k * (A(3) * B * Axb - S1) - VW[c] * rc * sxg[c] * invN;
    de[c] = k * (B * Ab + Af * w * sg[c] * invN) - VW[c] * rc * sg[c] * invN;
  }
  // pass 2: d/dx everywhere, d/dg per pooled pixel. One input pixel at offset o, channel c:
  // writes its d/dx and returns its (masked) contribution to the pooled pixel's d/dg.
  auto pixel = [&](int64_t o, int64_t c, A g4) -> A {
    const A xv = load(xi[o + c]), v = load(vi[o + c]);
    const A xh = (xv - m[c]) * r[c];
    const bool on = xv * a[c] + bb[c] > A(0);
    dxi[o + c] = store<T, A>(al[c] * v + (on ? be[c] * g4 : A(0)) + ga[c] * xh + de[c]);
    return on ? ka[c] * v + kx[c] * xh + k0[c] : A(0);
  };
  for (int64_t i = 0; i < Ho; ++i) {
    for (int64_t j = 0; j < Wo; ++j) {
      const T* __restrict__ gp = gi + (i * Wo + j) * C;
      T* __restrict__ dgp = dgi + (i * Wo + j) * C;
      const int64_t o00 = ((2 * i) * W + 2 * j) * C, o01 = o00 + C, o10 = o00 + W * C,
                    o11 = o10 + C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const A g4 = A(0.25) * load(gp[c]);
        A acc = pixel(o00, c, g4);
        acc += pixel(o01, c, g4);
        acc += pixel(o10, c, g4);
        acc += pixel(o11, c, g4);
        dgp[c] = store<T, A>(A(0.25) * acc);
      }
    }
  }
  // rows/columns the pooling dropped
  for (int64_t i = 0; i < H; ++i) {
    for (int64_t j = (i >= 2 * Ho ? 0 : 2 * Wo); j < W; ++j) {
      const int64_t off = (i * W + j) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const A xh = (load(xi[off + c]) - m[c]) * r[c];
        dxi[off + c] = store<T, A>(al[c] * load(vi[off + c]) + ga[c] * xh + de[c]);
      }
    }
  }
}

template <typename T, typename A>
void double_backward_kernel(const T* G, const T* X, const T* V, const A* M, const A* R,
                            const A* Wt, const A* Bt, const A* VW, const A* VB, T* DG, T* DX,
                            A* P, int64_t N, int64_t C, int64_t H, int64_t W) {
  const int64_t HW = H * W, HoWo = (H / 2) * (W / 2);
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    A* pw = P + at::get_thread_num() * C;  // this thread's d/dw
    std::vector<A> buf(14 * C);
    for (int64_t n = n0; n < n1; ++n)
      double_backward_image<T, A>(G + n * HoWo * C, X + n * HW * C, V + n * HW * C, M + n * C,
                                  R + n * C, Wt, Bt, VW, VB, DG + n * HoWo * C, DX + n * HW * C,
                                  pw, buf.data(), C, H, W);
  });
}

// ---- the first block with its convolution: conv3x3(Cin -> C, stride 1, zero padding p) ----
// The convolution's output (the largest activation of the network) is computed per image
// into a cache-resident scratch buffer, normalised and pooled there, and recomputed in the
// backward pass: it never goes to memory. K = Cin * 9 taps; wt is the weight as [K][C].

template <typename T>
inline void pad_image(const T* __restrict__ xi, T* __restrict__ xp, int64_t Cin, int64_t H,
                      int64_t W, int64_t p) {
  const int64_t Hp = H + 2 * p, Wp = W + 2 * p;
  std::fill(xp, xp + Cin * Hp * Wp, T(0));
  for (int64_t ci = 0; ci < Cin; ++ci)
    for (int64_t i = 0; i < H; ++i)
      std::memcpy(xp + (ci * Hp + i + p) * Wp + p, xi + (ci * H + i) * W, W * sizeof(T));
}

// im2col of one padded image: cols[(i * Wc + j) * K + k] = xp[ci][i + di][j + dj]
template <typename T>
inline void im2col_image(const T* __restrict__ xp, T* __restrict__ cols, int64_t Cin, int64_t Hp,
                         int64_t Wp) {
  const int64_t Hc = Hp - 2, Wc = Wp - 2, K = Cin * 9;
  for (int64_t i = 0; i < Hc; ++i)
    for (int64_t j = 0; j < Wc; ++j) {
      T* __restrict__ cp = cols + (i * Wc + j) * K;
      for (int64_t ci = 0; ci < Cin; ++ci)
        for (int64_t di = 0; di < 3; ++di)
          for (int64_t dj = 0; dj < 3; ++dj)
            cp[(ci * 3 + di) * 3 + dj] = xp[(ci * Hp + i + di) * Wp + j + dj];
    }
}

// z0 = cols @ wt + b0 for one image: an [Hc*Wc, K] x [K, C] product with K = 9 (one input
// channel) or 27 (RGB) taps, fixed at compile time so the accumulator stays in a register
// across the taps; other K: tap by tap.
template <typename T, int KK>
inline void stem_conv_fixed(const T* __restrict__ cols, const T* __restrict__ wt,
                            const T* __restrict__ b0, T* __restrict__ z, int64_t P, int64_t C) {
  for (int64_t p = 0; p < P; ++p) {
    T v[KK];
    for (int k = 0; k < KK; ++k) v[k] = cols[p * KK + k];
    T* __restrict__ zp = z + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      T acc = b0[c];
#pragma GCC unroll 27
      for (int k = 0; k < KK; ++k) acc += v[k] * wt[k * C + c];
      zp[c] = acc;
    }
  }
}

template <typename T>
inline void stem_conv_image(const T* __restrict__ cols, const T* __restrict__ wt,
                            const T* __restrict__ b0, T* __restrict__ z, int64_t P, int64_t K,
                            int64_t C) {
  if (K == 9) return stem_conv_fixed<T, 9>(cols, wt, b0, z, P, C);
  if (K == 27) return stem_conv_fixed<T, 27>(cols, wt, b0, z, P, C);
  for (int64_t p = 0; p < P; ++p) {
    T* __restrict__ zp = z + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) zp[c] = b0[c];
    for (int64_t k = 0; k < K; ++k) {
      const T v = cols[p * K + k];
      const T* __restrict__ wk = wt + k * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) zp[c] += v * wk[c];
    }
  }
}

// dL/dw0 += cols^T @ gz and dL/db0 += sum gz for one image, K fixed at compile time: per block
// of 16 channels the K + 1 accumulators stay in registers over all pixels.
template <typename T, int KK>
inline void stem_wgrad_fixed(const T* __restrict__ cols, const T* __restrict__ gz,
                             T* __restrict__ gw, T* __restrict__ gb, int64_t P, int64_t C) {
  constexpr int B = 16;
  int64_t cb = 0;
  for (; cb + B <= C; cb += B) {
    T acc[KK][B];
    T accb[B];
    for (int k = 0; k < KK; ++k)
      for (int c = 0; c < B; ++c) acc[k][c] = T(0);
    for (int c = 0; c < B; ++c) accb[c] = T(0);
    for (int64_t p = 0; p < P; ++p) {
      const T* __restrict__ g = gz + p * C + cb;
      const T* __restrict__ cp = cols + p * KK;
#pragma omp simd
      for (int c = 0; c < B; ++c) accb[c] += g[c];
#pragma GCC unroll 27
      for (int k = 0; k < KK; ++k) {
        const T v = cp[k];
#pragma omp simd
        for (int c = 0; c < B; ++c) acc[k][c] += v * g[c];
      }
    }
    for (int k = 0; k < KK; ++k)
      for (int c = 0; c < B; ++c) gw[k * C + cb + c] += acc[k][c];
    for (int c = 0; c < B; ++c) gb[cb + c] += accb[c];
  }
  for (int64_t p = 0; p < P; ++p)  // the last channels (C not a multiple of 16)
    for (int64_t c = cb; c < C; ++c) {
      const T g = gz[p * C + c];
      gb[c] += g;
      for (int k = 0; k < KK; ++k) gw[k * C + c] += cols[p * KK + k] * g;
    }
}

template <typename T, typename TO>
void stem_forward_kernel(const T* X, const T* wt, const T* b0, const T* Wt, const T* Bt, TO* O,
                         T* M, T* R, int64_t N, int64_t Cin, int64_t C, int64_t H, int64_t W,
                         int64_t p, double eps) {
  const int64_t Hp = H + 2 * p, Wp = W + 2 * p, Hc = Hp - 2, Wc = Wp - 2, K = Cin * 9;
  const int64_t HoWo = (Hc / 2) * (Wc / 2);
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<T> buf(3 * C), xp(Cin * Hp * Wp), cols(Hc * Wc * K), z(Hc * Wc * C);
    for (int64_t n = n0; n < n1; ++n) {
      pad_image<T>(X + n * Cin * H * W, xp.data(), Cin, H, W, p);
      im2col_image<T>(xp.data(), cols.data(), Cin, Hp, Wp);
      stem_conv_image<T>(cols.data(), wt, b0, z.data(), Hc * Wc, K, C);
      forward_image<T, T, TO>(z.data(), Wt, Bt, O + n * HoWo * C, M + n * C, R + n * C,
                              buf.data(), buf.data() + C, buf.data() + 2 * C, C, Hc, Wc, eps);
    }
  });
}

// P per thread: [K * C] dL/dw0 (as [K][C]), [C] dL/db0, [C] dL/dbeta, [C] dL/dgamma.
// The weight gradient cols^T @ gz and the input gradient gz @ wt^T (then col2im) are small
// matrix products on cache-resident per-image buffers, done by ATen's GEMM.
template <typename T, typename TG>
void stem_backward_kernel(const TG* G, const T* X, const T* M, const T* R, const T* wt,
                          const T* b0, const T* Wt, const T* Bt, T* GXin, T* P, int64_t N,
                          int64_t Cin, int64_t C, int64_t H, int64_t W, int64_t p,
                          at::ScalarType dt) {
  const int64_t Hp = H + 2 * p, Wp = W + 2 * p, Hc = Hp - 2, Wc = Wp - 2;
  const int64_t HoWo = (Hc / 2) * (Wc / 2), K = Cin * 9, PX = Hc * Wc;
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    T* gw0 = P + at::get_thread_num() * (K * C + 3 * C);
    T* gb0 = gw0 + K * C;
    T* pbeta = gb0 + C;
    T* pgamma = pbeta + C;
    auto opts = at::TensorOptions().dtype(dt);
    std::vector<T> buf(7 * C), xp(Cin * Hp * Wp), gxp(Cin * Hp * Wp), cols(PX * K), z(PX * C),
        gz(PX * C), gcols(PX * K);
    at::Tensor t_cols = at::from_blob(cols.data(), {PX, K}, opts);
    at::Tensor t_gz = at::from_blob(gz.data(), {PX, C}, opts);
    at::Tensor t_gw = at::from_blob(gw0, {K, C}, opts);
    at::Tensor t_wt = at::from_blob(const_cast<T*>(wt), {K, C}, opts);
    at::Tensor t_gcols = at::from_blob(gcols.data(), {PX, K}, opts);
    for (int64_t n = n0; n < n1; ++n) {
      pad_image<T>(X + n * Cin * H * W, xp.data(), Cin, H, W, p);
      im2col_image<T>(xp.data(), cols.data(), Cin, Hp, Wp);
      stem_conv_image<T>(cols.data(), wt, b0, z.data(), PX, K, C);
      backward_image<T, T, TG>(G + n * HoWo * C, z.data(), M + n * C, R + n * C, Wt, Bt,
                               gz.data(), pbeta, pgamma, buf.data(), nullptr, false, C, Hc, Wc);
      if (K == 9) {
        stem_wgrad_fixed<T, 9>(cols.data(), gz.data(), gw0, gb0, PX, C);
      } else if (K == 27) {
        stem_wgrad_fixed<T, 27>(cols.data(), gz.data(), gw0, gb0, PX, C);
      } else {
        for (int64_t q = 0; q < PX; ++q) {
          const T* __restrict__ g = gz.data() + q * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) gb0[c] += g[c];
        }
        t_gw.addmm_(t_cols.t(), t_gz);  // dL/dw0 as [K][C]
      }
      if (GXin != nullptr) {
        at::mm_out(t_gcols, t_gz, t_wt.t());  // dL/dcols
        std::fill(gxp.begin(), gxp.end(), T(0));
        for (int64_t i = 0; i < Hc; ++i)  // col2im
          for (int64_t j = 0; j < Wc; ++j) {
            const T* __restrict__ gc = gcols.data() + (i * Wc + j) * K;
            for (int64_t ci = 0; ci < Cin; ++ci)
              for (int64_t di = 0; di < 3; ++di)
                for (int64_t dj = 0; dj < 3; ++dj)
                  gxp[(ci * Hp + i + di) * Wp + j + dj] += gc[(ci * 3 + di) * 3 + dj];
          }
        T* gxi = GXin + n * Cin * H * W;
        for (int64_t ci = 0; ci < Cin; ++ci)
          for (int64_t i = 0; i < H; ++i)
            std::memcpy(gxi + (ci * H + i) * W, gxp.data() + (ci * Hp + i + p) * Wp + p,
                        W * sizeof(T));
      }
    }
  });
}

void check_block(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  TORCH_CHECK(x.device().is_cpu(), "norm_relu_pool: CPU tensors only");
  TORCH_CHECK(x.dim() == 4, "norm_relu_pool: x must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2, "norm_relu_pool: H and W must be >= 2");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == x.size(1) && b.dim() == 1 && b.size(0) == x.size(1),
              "norm_relu_pool: weight and bias must be [C]");
}

at::ScalarType math_type(at::ScalarType t) {
  return t == at::kBFloat16 ? at::kFloat : t;
}

}  // namespace

std::vector<at::Tensor> norm_relu_pool_forward(at::Tensor x, at::Tensor w, at::Tensor b,
                                               double eps) {
  check_block(x, w, b);
  x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const auto mt = math_type(x.scalar_type());
  w = w.to(mt).contiguous();
  b = b.to(mt).contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto out = at::empty({N, C, H / 2, W / 2},
                       x.options().memory_format(at::MemoryFormat::ChannelsLast));
  auto mean = at::empty({N, C}, x.options().dtype(mt));
  auto rstd = at::empty({N, C}, x.options().dtype(mt));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "norm_relu_pool_forward", [&] {
    using A = typename Math<scalar_t>::type;
    forward_kernel<scalar_t, A>(x.data_ptr<scalar_t>(), w.data_ptr<A>(), b.data_ptr<A>(),
                                out.data_ptr<scalar_t>(), mean.data_ptr<A>(), rstd.data_ptr<A>(),
                                N, C, H, W, eps);
  });
  return {out, mean, rstd};
}

std::vector<at::Tensor> norm_relu_pool_backward(at::Tensor gy, at::Tensor x, at::Tensor mean,
                                                at::Tensor rstd, at::Tensor w, at::Tensor b) {
  check_block(x, w, b);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(gy.dim() == 4 && gy.size(0) == N && gy.size(1) == C && gy.size(2) == H / 2 &&
              gy.size(3) == W / 2, "norm_relu_pool: grad_out has shape ", gy.sizes());
  x = x.contiguous(at::MemoryFormat::ChannelsLast);
  gy = gy.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  const auto mt = math_type(x.scalar_type());
  w = w.to(mt).contiguous();
  b = b.to(mt).contiguous();
  mean = mean.to(mt).contiguous();
  rstd = rstd.to(mt).contiguous();
  auto gx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  auto part = at::zeros({at::get_num_threads(), 2, C}, x.options().dtype(mt));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "norm_relu_pool_backward", [&] {
    using A = typename Math<scalar_t>::type;
    backward_kernel<scalar_t, A>(gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                 mean.data_ptr<A>(), rstd.data_ptr<A>(), w.data_ptr<A>(),
                                 b.data_ptr<A>(), gx.data_ptr<scalar_t>(), part.data_ptr<A>(), N,
                                 C, H, W);
  });
  auto s = part.sum(0);
  return {gx, s[1].clone(), s[0].clone()};  // dL/dx, dL/dw, dL/db
}

// x: [N, Cin, H, W] (any layout; read as NCHW), w0: [C, Cin, 3, 3], b0, gamma, beta: [C].
std::vector<at::Tensor> conv_norm_relu_pool_forward(at::Tensor x, at::Tensor w0, at::Tensor b0,
                                                    int64_t pad, at::Tensor gamma,
                                                    at::Tensor beta, double eps, bool out_bf16) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4, "conv_norm_relu_pool: x must be [N, Cin, H, W] on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "conv_norm_relu_pool: float32 or float64");
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), C = w0.size(0);
  TORCH_CHECK(w0.dim() == 4 && w0.size(1) == Cin && w0.size(2) == 3 && w0.size(3) == 3,
              "conv_norm_relu_pool: weight must be [C, Cin, 3, 3]");
  const int64_t Hc = H + 2 * pad - 2, Wc = W + 2 * pad - 2;
  TORCH_CHECK(pad >= 0 && Hc >= 2 && Wc >= 2, "conv_norm_relu_pool: output smaller than 2x2");
  const auto dt = x.scalar_type();
  x = x.contiguous();
  auto wt = w0.to(dt).reshape({C, Cin * 9}).t().contiguous();
  b0 = b0.to(dt).contiguous();
  gamma = gamma.to(dt).contiguous();
  beta = beta.to(dt).contiguous();
  TORCH_CHECK(!out_bf16 || dt == at::kFloat, "conv_norm_relu_pool: bf16 output needs float32 x");
  auto out = at::empty({N, C, Hc / 2, Wc / 2},
                       x.options().dtype(out_bf16 ? at::kBFloat16 : dt)
                           .memory_format(at::MemoryFormat::ChannelsLast));
  auto mean = at::empty({N, C}, x.options());
  auto rstd = at::empty({N, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "conv_norm_relu_pool_forward", [&] {
    if (out_bf16) {
      stem_forward_kernel<scalar_t, c10::BFloat16>(
          x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), b0.data_ptr<scalar_t>(),
          gamma.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>(), out.data_ptr<c10::BFloat16>(),
          mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), N, Cin, C, H, W, pad, eps);
    } else {
      stem_forward_kernel<scalar_t, scalar_t>(
          x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), b0.data_ptr<scalar_t>(),
          gamma.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
          mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), N, Cin, C, H, W, pad, eps);
    }
  });
  return {out, mean, rstd};
}

// returns dL/dx (empty when not wanted), dL/dw0, dL/db0, dL/dgamma, dL/dbeta
std::vector<at::Tensor> conv_norm_relu_pool_backward(at::Tensor gy, at::Tensor x, at::Tensor mean,
                                                     at::Tensor rstd, at::Tensor w0,
                                                     at::Tensor b0, int64_t pad,
                                                     at::Tensor gamma, at::Tensor beta,
                                                     bool input_grad) {
  const auto dt = x.scalar_type();
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), C = w0.size(0);
  const int64_t Hc = H + 2 * pad - 2, Wc = W + 2 * pad - 2;
  TORCH_CHECK(gy.dim() == 4 && gy.size(0) == N && gy.size(1) == C && gy.size(2) == Hc / 2 &&
              gy.size(3) == Wc / 2, "conv_norm_relu_pool: grad_out has shape ", gy.sizes());
  x = x.contiguous();
  const bool g_bf16 = gy.scalar_type() == at::kBFloat16 && dt == at::kFloat;
  gy = (g_bf16 ? gy : gy.to(dt)).contiguous(at::MemoryFormat::ChannelsLast);
  auto wt = w0.to(dt).reshape({C, Cin * 9}).t().contiguous();
  b0 = b0.to(dt).contiguous();
  gamma = gamma.to(dt).contiguous();
  beta = beta.to(dt).contiguous();
  mean = mean.to(dt).contiguous();
  rstd = rstd.to(dt).contiguous();
  const int64_t K = Cin * 9;
  auto part = at::zeros({at::get_num_threads(), K * C + 3 * C}, x.options());
  at::Tensor gx = input_grad ? at::empty({N, Cin, H, W}, x.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(dt, "conv_norm_relu_pool_backward", [&] {
    scalar_t* gxp = input_grad ? gx.data_ptr<scalar_t>() : nullptr;
    if (g_bf16) {
      stem_backward_kernel<scalar_t, c10::BFloat16>(
          gy.data_ptr<c10::BFloat16>(), x.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
          rstd.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), b0.data_ptr<scalar_t>(),
          gamma.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>(), gxp, part.data_ptr<scalar_t>(),
          N, Cin, C, H, W, pad, dt);
    } else {
      stem_backward_kernel<scalar_t, scalar_t>(
          gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
          rstd.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), b0.data_ptr<scalar_t>(),
          gamma.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>(), gxp, part.data_ptr<scalar_t>(),
          N, Cin, C, H, W, pad, dt);
    }
  });
  auto s = part.sum(0);
  auto gw0 = s.slice(0, 0, K * C).reshape({Cin, 3, 3, C}).permute({3, 0, 1, 2}).contiguous();
  auto gb0 = s.slice(0, K * C, K * C + C).clone();
  auto gbeta = s.slice(0, K * C + C, K * C + 2 * C).clone();
  auto ggamma = s.slice(0, K * C + 2 * C, K * C + 3 * C).clone();
  return {input_grad ? gx : at::zeros({0}, x.options()), gw0, gb0, ggamma, gbeta};
}

// returns d/dg (pooled shape), d/dx, d/dw for incoming (vx, vw, vb); see double_backward_image
std::vector<at::Tensor> norm_relu_pool_double_backward(at::Tensor gy, at::Tensor x,
                                                       at::Tensor mean, at::Tensor rstd,
                                                       at::Tensor w, at::Tensor b, at::Tensor vx,
                                                       at::Tensor vw, at::Tensor vb) {
  check_block(x, w, b);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(gy.dim() == 4 && gy.size(0) == N && gy.size(1) == C && gy.size(2) == H / 2 &&
              gy.size(3) == W / 2, "norm_relu_pool: grad_out has shape ", gy.sizes());
  TORCH_CHECK(vx.sizes() == x.sizes(), "norm_relu_pool: grad of dL/dx has shape ", vx.sizes());
  const auto dt = x.scalar_type(), mt = math_type(dt);
  x = x.contiguous(at::MemoryFormat::ChannelsLast);
  gy = gy.to(dt).contiguous(at::MemoryFormat::ChannelsLast);
  vx = vx.to(dt).contiguous(at::MemoryFormat::ChannelsLast);
  w = w.to(mt).contiguous();
  b = b.to(mt).contiguous();
  vw = vw.to(mt).contiguous();
  vb = vb.to(mt).contiguous();
  mean = mean.to(mt).contiguous();
  rstd = rstd.to(mt).contiguous();
  auto dg = at::empty_like(gy, gy.options(), at::MemoryFormat::ChannelsLast);
  auto dx = at::empty_like(x, x.options(), at::MemoryFormat::ChannelsLast);
  auto part = at::zeros({at::get_num_threads(), C}, w.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dt, "norm_relu_pool_double_backward", [&] {
    using A = typename Math<scalar_t>::type;
    double_backward_kernel<scalar_t, A>(
        gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), vx.data_ptr<scalar_t>(),
        mean.data_ptr<A>(), rstd.data_ptr<A>(), w.data_ptr<A>(), b.data_ptr<A>(),
        vw.data_ptr<A>(), vb.data_ptr<A>(), dg.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(),
        part.data_ptr<A>(), N, C, H, W);
  });
  return {dg, dx, part.sum(0)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &norm_relu_pool_forward, "instance norm -> ReLU -> 2x2 avg pool (NHWC)");
  m.def("backward", &norm_relu_pool_backward, "its first-order backward");
  m.def("double_backward", &norm_relu_pool_double_backward, "the backward of its backward");
  m.def("stem_forward", &conv_norm_relu_pool_forward,
        "conv3x3 -> instance norm -> ReLU -> 2x2 avg pool (the first block, conv fused)");
  m.def("stem_backward", &conv_norm_relu_pool_backward, "its first-order backward");
}
