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

template <typename T, typename A>
void forward_kernel(const T* X, const A* Wt, const A* Bt, T* O, A* M, A* R, int64_t N, int64_t C,
                    int64_t H, int64_t W, double eps) {
  const int64_t Ho = H / 2, Wo = W / 2, HW = H * W;
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<A> buf(3 * C);
    A* __restrict__ s = buf.data();
    A* __restrict__ a = s + C;
    A* __restrict__ bb = a + C;
    for (int64_t n = n0; n < n1; ++n) {
      const T* __restrict__ xi = X + n * HW * C;
      A* __restrict__ m = M + n * C;
      A* __restrict__ r = R + n * C;
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
      T* __restrict__ oi = O + n * Ho * Wo * C;
      for (int64_t i = 0; i < Ho; ++i) {
        for (int64_t j = 0; j < Wo; ++j) {
          const T* __restrict__ x00 = xi + ((2 * i) * W + 2 * j) * C;
          const T* __restrict__ x01 = x00 + C;
          const T* __restrict__ x10 = x00 + W * C;
          const T* __restrict__ x11 = x10 + C;
          T* __restrict__ op = oi + (i * Wo + j) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            A v = std::max(load(x00[c]) * a[c] + bb[c], A(0)) +
                  std::max(load(x01[c]) * a[c] + bb[c], A(0)) +
                  std::max(load(x10[c]) * a[c] + bb[c], A(0)) +
                  std::max(load(x11[c]) * a[c] + bb[c], A(0));
            op[c] = store<T, A>(A(0.25) * v);
          }
        }
      }
    }
  });
}

// dL/dx of y = pool(relu(z)), z = xhat * w + b, xhat = (x - m) * r, with gz = dL/dz:
//   dL/dx = r * w * (gz - mean(gz) - xhat * mean(gz * xhat)),  dL/dw = sum gz * xhat,
//   dL/db = sum gz.
template <typename T, typename A>
void backward_kernel(const T* G, const T* X, const A* M, const A* R, const A* Wt, const A* Bt,
                     T* GX, A* P, int64_t N, int64_t C, int64_t H, int64_t W) {
  const int64_t Ho = H / 2, Wo = W / 2, HW = H * W;
  const int64_t grain = 1;
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    A* __restrict__ pa = P + at::get_thread_num() * 2 * C;  // this thread's dL/db, dL/dw
    A* __restrict__ pb = pa + C;
    std::vector<A> buf(7 * C);
    std::vector<T> rowbuf(C);
    T* __restrict__ row = rowbuf.data();
    A* __restrict__ a = buf.data();  // z = x * a + bb
    A* __restrict__ bb = a + C;
    A* __restrict__ sg = bb + C;     // 4 * sum gz
    A* __restrict__ sgx = sg + C;    // 4 * sum gz * (x - m)
    A* __restrict__ c0 = sgx + C;    // dL/dx = [z > 0] * q * g + x * c1 + c0
    A* __restrict__ c1 = c0 + C;
    A* __restrict__ q = c1 + C;
    for (int64_t n = n0; n < n1; ++n) {
      const T* __restrict__ xi = X + n * HW * C;
      const T* __restrict__ gi = G + n * Ho * Wo * C;
      const A* __restrict__ m = M + n * C;
      const A* __restrict__ r = R + n * C;
      T* __restrict__ gxi = GX + n * HW * C;
      for (int64_t c = 0; c < C; ++c) {
        a[c] = r[c] * Wt[c];
        bb[c] = Bt[c] - m[c] * a[c];
        sg[c] = A(0);
        sgx[c] = A(0);
      }
      // pass 1: per output pixel, its four inputs share one incoming gradient g (gz = g / 4)
      for (int64_t i = 0; i < Ho; ++i) {
        for (int64_t j = 0; j < Wo; ++j) {
          const T* __restrict__ gp = gi + (i * Wo + j) * C;
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
          if (i >= 2 * Ho || j >= 2 * Wo) {  // dropped by the pooling: no gradient from above
#pragma omp simd
            for (int64_t c = 0; c < C; ++c)
              row[c] = store<T, A>(load(xp[c]) * c1[c] + c0[c]);
            stream_row(gxp, row, C);
            continue;
          }
          const T* __restrict__ gp = gi + ((i / 2) * Wo + j / 2) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const A v = load(xp[c]);
            const A g = v * a[c] + bb[c] > A(0) ? load(gp[c]) * q[c] : A(0);
            row[c] = store<T, A>(g + v * c1[c] + c0[c]);
          }
          stream_row(gxp, row, C);
        }
      }
    }
#if defined(__AVX512F__)
    _mm_sfence();  // streaming stores visible before the caller reads dL/dx
#endif
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &norm_relu_pool_forward, "instance norm -> ReLU -> 2x2 avg pool (NHWC)");
  m.def("backward", &norm_relu_pool_backward, "its first-order backward");
}
