// Fused blocked attention for CPUs, forward and backward, as XLA FFI custom calls.
//
// Queries [B, Q, H, D], keys and values [B, K, G, D] (G divides H), a boolean mask [B, Q, K], an
// additive bias [Bb, Hb, Qb, K] (each of Bb, Hb, Qb 1 or full; a [1, 1, 1, 1] zero when there is
// none) and the logit scale. The forward pass walks tiles of TQ queries by TK keys with an online
// softmax and skips every tile the mask leaves empty; it writes the output and each query's
// log-sum-exp. The backward pass recomputes the probabilities tile by tile from the log-sum-exp
// (FlashAttention-2's scheme) and writes dq, dk, dv and, when asked, the logits' gradient for a
// bias. All arithmetic is float32. Queries with no allowed key output 0 and pass no gradient.
//
// Work is split over (batch, head) in the forward pass and over (batch, kv head) in the backward
// pass, which owns every write of its dk and dv: no two threads write one element. The threads
// are XLA's own intra-op pool's (the calling thread takes tasks too, so a busy pool only slows it).

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int TQ = 32;
constexpr int TK = 64;  // a multiple of 16 (row_max, row_sum, exp_row)
constexpr float kMasked = -1e30f;

// 2^f for f in [0, 1), within 2e-7 relative: one polynomial for a float and for a vector of them.
template <typename T>
inline T exp2_fraction(T f) {
  T p = f * 1.535336188319500e-4f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  return p * f + 1.0f;
}

// exp(x) for x <= 0 down to -87 (below: 0), within 2e-7 relative (exp_row: the same on vectors).
inline float exp_neg(float x) {
  x = std::max(x, -87.0f);
  float t = x * 1.4426950408889634f;
  float fi = std::floor(t);
  int32_t e = (static_cast<int32_t>(fi) + 127) << 23;
  return exp2_fraction(t - fi) * std::bit_cast<float>(e);
}

// max(init, x[0..TK)) and sum(x[0..TK)) over 16 lanes, so the loops vectorize without reassociating
// flags (a float reduction in one accumulator stays scalar).
inline float row_max(const float* x, float init) {
  float lane[16];
  std::fill(lane, lane + 16, init);
  for (int j = 0; j < TK; j += 16)
    for (int x16 = 0; x16 < 16; ++x16) lane[x16] = std::max(lane[x16], x[j + x16]);
  float m = lane[0];
  for (int x16 = 1; x16 < 16; ++x16) m = std::max(m, lane[x16]);
  return m;
}

inline float row_sum(const float* x) {
  float lane[16] = {};
  for (int j = 0; j < TK; j += 16)
    for (int x16 = 0; x16 < 16; ++x16) lane[x16] += x[j + x16];
  float sum = 0.0f;
  for (int x16 = 0; x16 < 16; ++x16) sum += lane[x16];
  return sum;
}

struct Shapes {
  int64_t B, Q, H, K, G, D, R;
  int64_t bias_b, bias_h, bias_q;  // element strides of the bias (0 where broadcast)
  bool has_bias;
};

// body(i) for i in [0, n), on the calling thread and up to the pool's other threads. A helper
// that starts after every task is taken returns at once; the caller waits only for helpers that
// took a task.
template <typename Body>
void parallel_for(ffi::ThreadPool& pool, int64_t n, const Body& body) {
  struct Job {
    std::atomic<int64_t> next{0};
    std::atomic<int> active{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto job = std::make_shared<Job>();
  auto work = [job, n, &body]() {
    job->active.fetch_add(1);
    for (int64_t i = job->next.fetch_add(1); i < n; i = job->next.fetch_add(1)) body(i);
    if (job->active.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(job->mu);
      job->cv.notify_all();
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t h = 0; h < helpers; ++h) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  std::unique_lock<std::mutex> lock(job->mu);
  job->cv.wait(lock, [&] { return job->active.load() == 0; });
}

// A per-thread scratch buffer of at least n floats.
inline float* scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Vectors of VL floats (GCC/Clang vector extensions): a 512-bit register where the CPU has
// AVX-512, else 256 bits. RB rows of C by CB vectors stay in registers through a product.
#if defined(__AVX512F__)
constexpr int VL = 16, RB = 4;
#else
constexpr int VL = 8, RB = 2;
#endif
typedef float vf __attribute__((vector_size(VL * sizeof(float))));

inline vf vload(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));

// x[j] = x[j] > kMasked / 2 ? exp(x[j] - sub) : 0 for j < TK: exp_neg on whole vectors (floor by
// truncation and a correction, the exponent by shifting into the bits).
inline void exp_row(float* x, float sub) {
  for (int j = 0; j < TK; j += VL) {
    const vf raw = vload(x + j);
    vf y = raw - sub;
    y = y < -87.0f ? vf{} - 87.0f : y;
    const vf t = y * 1.4426950408889634f;
    vi ti = __builtin_convertvector(t, vi);           // toward zero: the ceiling for t < 0
    ti += (__builtin_convertvector(ti, vf) > t);      // true is -1: down to the floor
    const vf p = exp2_fraction(t - __builtin_convertvector(ti, vf));
    vf scale;
    const vi bits = (ti + 127) << 23;
    std::memcpy(&scale, &bits, sizeof scale);
    vstore(x + j, raw > 0.5f * kMasked ? p * scale : vf{});
  }
}

// C[c][:W] += sum_t P[c * CS + t * TS] * rows[t][:W] for c < NC, t < NT: the product of P (or
// its transpose) with a tile of rows of width W, in register blocks of RB rows of C by up to 4
// vectors. Every matmul of the kernel is one of these.
template <int W, int NC, int NT, int CS, int TS>
inline void mm_acc(const float* __restrict P, const float* __restrict rows, float* __restrict C) {
  constexpr int NV = W / VL, CB = NV < 4 ? NV : 4;
  static_assert(W % VL == 0 && NV % CB == 0 && NC % RB == 0, "tile shapes");
  for (int c = 0; c < NC; c += RB) {
    for (int v0 = 0; v0 < NV; v0 += CB) {
      vf acc[RB][CB];
#pragma GCC unroll 16
      for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
        for (int j = 0; j < CB; ++j) acc[r][j] = vload(C + (c + r) * W + (v0 + j) * VL);
      for (int t = 0; t < NT; ++t) {
        vf x[CB];
#pragma GCC unroll 4
        for (int j = 0; j < CB; ++j) x[j] = vload(rows + t * W + (v0 + j) * VL);
#pragma GCC unroll 16
        for (int r = 0; r < RB; ++r) {
          const float p = P[(c + r) * CS + t * TS];
#pragma GCC unroll 4
          for (int j = 0; j < CB; ++j) acc[r][j] += p * x[j];
        }
      }
#pragma GCC unroll 16
      for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
        for (int j = 0; j < CB; ++j) vstore(C + (c + r) * W + (v0 + j) * VL, acc[r][j]);
    }
  }
}

// C[TQ][TK] = A[TQ][D] . Bt[D][TK]
template <int D>
inline void mm_nt(const float* A, const float* Bt, float* C) {
  std::fill(C, C + TQ * TK, 0.0f);
  mm_acc<TK, TQ, D, D, 1>(A, Bt, C);
}

// C[TQ][D] += P[TQ][TK] . Brows[TK][D]
template <int D>
inline void mm_nn_acc(const float* P, const float* Brows, float* C) {
  mm_acc<D, TQ, TK, TK, 1>(P, Brows, C);
}

// C[TK][D] += P[TQ][TK]^T . Arows[TQ][D]
template <int D>
inline void mm_tn_acc(const float* P, const float* Arows, float* C) {
  mm_acc<D, TK, TQ, 1, TK>(P, Arows, C);
}

// Rows [start, start + n) of x[b, :, head, :] (row stride `heads * D`) into a zero-padded [rows][D] tile.
template <int D>
inline void load_rows(const float* x, int64_t b, int64_t len, int64_t heads, int64_t head, int64_t start, int rows, float scale, float* tile) {
  std::memset(tile, 0, sizeof(float) * rows * D);
  const int64_t n = std::min<int64_t>(rows, len - start);
  for (int64_t r = 0; r < n; ++r) {
    const float* src = x + ((b * len + start + r) * heads + head) * D;
    for (int d = 0; d < D; ++d) tile[r * D + d] = src[d] * scale;
  }
}

// The transpose of a [TK][D] tile: [D][TK].
template <int D>
inline void transpose(const float* rows, float* cols) {
  for (int j = 0; j < TK; ++j)
    for (int d = 0; d < D; ++d) cols[d * TK + j] = rows[j * D + d];
}

// The tile allowed[b, q0:q0+TQ, k0:k0+TK]: 0 when no pair is allowed, 2 when every pair is (the
// tile lies inside the arrays), else 1.
enum Tile { kEmpty = 0, kPartial = 1, kFull = 2 };

inline Tile classify(const bool* allowed, const Shapes& s, int64_t b, int64_t q0, int64_t k0) {
  const int64_t nq = std::min<int64_t>(TQ, s.Q - q0), nk = std::min<int64_t>(TK, s.K - k0);
  uint8_t any = 0, all = 1;
  for (int64_t i = 0; i < nq; ++i) {
    const uint8_t* row = reinterpret_cast<const uint8_t*>(allowed + (b * s.Q + q0 + i) * s.K + k0);
    for (int64_t j = 0; j < nk; ++j) {
      any |= row[j];
      all &= row[j];
    }
  }
  if (!any) return kEmpty;
  return all && nq == TQ && nk == TK ? kFull : kPartial;
}

// S += bias; then, unless the tile is full, S = kMasked at every pair the mask leaves out (and
// outside the arrays).
inline void mask_and_bias(const Shapes& s, const bool* allowed, const float* bias, int64_t b, int64_t h, int64_t q0, int64_t k0, Tile tile, float* S) {
  const int64_t nq = std::min<int64_t>(TQ, s.Q - q0), nk = std::min<int64_t>(TK, s.K - k0);
  if (s.has_bias) {
    for (int64_t i = 0; i < nq; ++i) {
      const float* row = bias + b * s.bias_b + h * s.bias_h + (q0 + i) * s.bias_q + k0;
      for (int64_t j = 0; j < nk; ++j) S[i * TK + j] += row[j];
    }
  }
  if (tile == kFull) return;
  for (int64_t i = 0; i < TQ; ++i) {
    float* out = S + i * TK;
    if (i >= nq) {
      std::fill(out, out + TK, kMasked);
      continue;
    }
    const uint8_t* row = reinterpret_cast<const uint8_t*>(allowed + (b * s.Q + q0 + i) * s.K + k0);
    for (int64_t j = 0; j < nk; ++j) out[j] = row[j] ? out[j] : kMasked;
    for (int64_t j = nk; j < TK; ++j) out[j] = kMasked;
  }
}

// Keys or values of (b, g) as zero-padded rows [Kp][D] and, when `cols` is given, each tile of
// TK rows transposed, [tiles][D][TK]: loaded once per task, read by every query tile.
template <int D>
inline void load_keys(const float* x, const Shapes& s, int64_t b, int64_t g, int64_t tiles_k, float* rows, float* cols) {
  for (int64_t t = 0; t < tiles_k; ++t) {
    load_rows<D>(x, b, s.K, s.G, g, t * TK, TK, 1.0f, rows + t * TK * D);
    if (cols != nullptr) transpose<D>(rows + t * TK * D, cols + t * TK * D);
  }
}

template <int D>
void forward(ffi::ThreadPool& pool, const Shapes& s, const float* q, const float* k, const float* v, const bool* allowed, const float* bias, float scale,
             float* out, float* lse) {
  const int64_t tiles_q = (s.Q + TQ - 1) / TQ, tiles_k = (s.K + TK - 1) / TK;
  const int64_t Kp = tiles_k * TK;
  parallel_for(pool, s.B * s.H, [&](int64_t task) {
    thread_local std::vector<float> buf;
    float* qt = scratch(buf, TQ * D * 2 + Kp * D * 3 + TQ * TK + TQ * 3);
    float* acc = qt + TQ * D;
    float* kr = acc + TQ * D;
    float* kt = kr + Kp * D;
    float* vr = kt + Kp * D;
    float* S = vr + Kp * D;
    float* m = S + TQ * TK;
    float* l = m + TQ;
    float* corr = l + TQ;
    const int64_t b = task / s.H, h = task % s.H, g = h / s.R;
    load_keys<D>(k, s, b, g, tiles_k, kr, kt);
    load_keys<D>(v, s, b, g, tiles_k, vr, nullptr);
    for (int64_t iq = 0; iq < tiles_q; ++iq) {
      const int64_t q0 = iq * TQ;
      load_rows<D>(q, b, s.Q, s.H, h, q0, TQ, scale, qt);
      std::fill(acc, acc + TQ * D, 0.0f);
      std::fill(m, m + TQ, kMasked);
      std::fill(l, l + TQ, 0.0f);
      for (int64_t ik = 0; ik < tiles_k; ++ik) {
        const int64_t k0 = ik * TK;
        const Tile tile = classify(allowed, s, b, q0, k0);
        if (tile == kEmpty) continue;
        mm_nt<D>(qt, kt + k0 * D, S);
        mask_and_bias(s, allowed, bias, b, h, q0, k0, tile, S);
        for (int i = 0; i < TQ; ++i) {
          float* row = S + i * TK;
          const float mx = row_max(row, m[i]);
          exp_row(row, mx);
          corr[i] = exp_neg(m[i] - mx);
          l[i] = l[i] * corr[i] + row_sum(row);
          m[i] = mx;
        }
        for (int i = 0; i < TQ; ++i)
          for (int x = 0; x < D; ++x) acc[i * D + x] *= corr[i];
        mm_nn_acc<D>(S, vr + k0 * D, acc);
      }
      const int64_t nq = std::min<int64_t>(TQ, s.Q - q0);
      for (int64_t i = 0; i < nq; ++i) {
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        float* dst = out + ((b * s.Q + q0 + i) * s.H + h) * D;
        for (int x = 0; x < D; ++x) dst[x] = acc[i * D + x] * inv;
        lse[(b * s.H + h) * s.Q + q0 + i] = l[i] > 0.0f ? m[i] + std::log(l[i]) : -kMasked;
      }
    }
  });
}

template <int D>
void backward(ffi::ThreadPool& pool, const Shapes& s, const float* q, const float* k, const float* v, const bool* allowed, const float* bias,
              float scale, const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv, float* dbias) {
  const int64_t tiles_q = (s.Q + TQ - 1) / TQ, tiles_k = (s.K + TK - 1) / TK;
  const int64_t Kp = tiles_k * TK;
  parallel_for(pool, s.B * s.G, [&](int64_t task) {
    thread_local std::vector<float> buf;
    float* qt = scratch(buf, TQ * D * 4 + TQ * TK * 2 + TQ * 2 + Kp * D * 6);
    float* qr = qt + TQ * D;
    float* dot = qr + TQ * D;
    float* dqa = dot + TQ * D;
    float* S = dqa + TQ * D;
    float* dP = S + TQ * TK;
    float* delta = dP + TQ * TK;
    float* lrow = delta + TQ;
    float* kr = lrow + TQ;
    float* kt = kr + Kp * D;
    float* vr = kt + Kp * D;
    float* vt = vr + Kp * D;
    float* dka = vt + Kp * D;
    float* dva = dka + Kp * D;
    const int64_t b = task / s.G, g = task % s.G;
    load_keys<D>(k, s, b, g, tiles_k, kr, kt);
    load_keys<D>(v, s, b, g, tiles_k, vr, vt);
    std::fill(dka, dka + Kp * D, 0.0f);
    std::fill(dva, dva + Kp * D, 0.0f);
    for (int64_t h = g * s.R; h < (g + 1) * s.R; ++h) {
      for (int64_t iq = 0; iq < tiles_q; ++iq) {
        const int64_t q0 = iq * TQ;
        const int64_t nq = std::min<int64_t>(TQ, s.Q - q0);
        load_rows<D>(q, b, s.Q, s.H, h, q0, TQ, scale, qt);
        load_rows<D>(q, b, s.Q, s.H, h, q0, TQ, 1.0f, qr);
        load_rows<D>(dout, b, s.Q, s.H, h, q0, TQ, 1.0f, dot);
        std::fill(dqa, dqa + TQ * D, 0.0f);
        std::fill(delta, delta + TQ, 0.0f);
        std::fill(lrow, lrow + TQ, -kMasked);
        for (int64_t i = 0; i < nq; ++i) {
          const float* o = out + ((b * s.Q + q0 + i) * s.H + h) * D;
          float acc = 0.0f;
          for (int x = 0; x < D; ++x) acc += o[x] * dot[i * D + x];
          delta[i] = acc;
          lrow[i] = lse[(b * s.H + h) * s.Q + q0 + i];
        }
        for (int64_t ik = 0; ik < tiles_k; ++ik) {
          const int64_t k0 = ik * TK;
          const Tile tile = classify(allowed, s, b, q0, k0);
          if (tile == kEmpty) continue;
          mm_nt<D>(qt, kt + k0 * D, S);
          mask_and_bias(s, allowed, bias, b, h, q0, k0, tile, S);
          for (int i = 0; i < TQ; ++i) exp_row(S + i * TK, lrow[i]);
          mm_tn_acc<D>(S, dot, dva + k0 * D);  // dv += P^T dO
          mm_nt<D>(dot, vt + k0 * D, dP);      // dP = dO V^T
          for (int i = 0; i < TQ; ++i)
            for (int j = 0; j < TK; ++j) dP[i * TK + j] = S[i * TK + j] * (dP[i * TK + j] - delta[i]);  // dS
          if (dbias != nullptr) {
            const int64_t nk = std::min<int64_t>(TK, s.K - k0);
            for (int64_t i = 0; i < nq; ++i)
              std::memcpy(dbias + ((b * s.H + h) * s.Q + q0 + i) * s.K + k0, dP + i * TK, sizeof(float) * nk);
          }
          for (int i = 0; i < TQ * TK; ++i) dP[i] *= scale;
          mm_nn_acc<D>(dP, kr + k0 * D, dqa);  // dq += scale dS K
          mm_tn_acc<D>(dP, qr, dka + k0 * D);  // dk += scale dS^T Q
        }
        for (int64_t i = 0; i < nq; ++i) std::memcpy(dq + ((b * s.Q + q0 + i) * s.H + h) * D, dqa + i * D, sizeof(float) * D);
      }
    }
    for (int64_t j = 0; j < s.K; ++j) {
      std::memcpy(dk + ((b * s.K + j) * s.G + g) * D, dka + j * D, sizeof(float) * D);
      std::memcpy(dv + ((b * s.K + j) * s.G + g) * D, dva + j * D, sizeof(float) * D);
    }
  });
}

ffi::Error shapes_of(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::PRED>& allowed, ffi::Buffer<ffi::F32>& bias, bool has_bias, Shapes* s) {
  auto qd = q.dimensions(), kd = k.dimensions(), md = allowed.dimensions(), bd = bias.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || md.size() != 3 || bd.size() != 4) return ffi::Error::InvalidArgument("attention: expected q, k [B, L, heads, D], mask [B, Q, K], bias [B, H, Q, K]");
  *s = Shapes{qd[0], qd[1], qd[2], kd[1], kd[2], qd[3], qd[2] / kd[2], 0, 0, 0, has_bias};
  if (kd[0] != s->B || kd[3] != s->D || s->H % s->G != 0) return ffi::Error::InvalidArgument("attention: q and k do not match");
  if (md[0] != s->B || md[1] != s->Q || md[2] != s->K) return ffi::Error::InvalidArgument("attention: the mask is not [B, Q, K]");
  if (has_bias) {
    if (bd[3] != s->K || (bd[0] != 1 && bd[0] != s->B) || (bd[1] != 1 && bd[1] != s->H) || (bd[2] != 1 && bd[2] != s->Q))
      return ffi::Error::InvalidArgument("attention: the bias is not [B or 1, H or 1, Q or 1, K]");
    s->bias_q = bd[2] == 1 ? 0 : s->K;
    s->bias_h = bd[1] == 1 ? 0 : bd[2] * s->K;
    s->bias_b = bd[0] == 1 ? 0 : bd[1] * bd[2] * s->K;
  }
  return ffi::Error::Success();
}

#define DISPATCH_D(D_, CALL)                                                   \
  switch (D_) {                                                                \
    case 16: { constexpr int Dc = 16; CALL; break; }                           \
    case 32: { constexpr int Dc = 32; CALL; break; }                           \
    case 64: { constexpr int Dc = 64; CALL; break; }                           \
    case 128: { constexpr int Dc = 128; CALL; break; }                         \
    default: return ffi::Error::InvalidArgument("attention: head width must be 16, 32, 64 or 128"); \
  }

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> allowed, ffi::Buffer<ffi::F32> bias,
                   float scale, bool has_bias, ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> lse) {
  Shapes s;
  if (auto e = shapes_of(q, k, allowed, bias, has_bias, &s); e.failure()) return e;
  DISPATCH_D(s.D, (forward<Dc>(pool, s, q.typed_data(), k.typed_data(), v.typed_data(), allowed.typed_data(), bias.typed_data(), scale, out->typed_data(), lse->typed_data())));
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> allowed, ffi::Buffer<ffi::F32> bias,
                    ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> dout, float scale, bool has_bias, bool bias_grad,
                    ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv, ffi::ResultBuffer<ffi::F32> dbias) {
  Shapes s;
  if (auto e = shapes_of(q, k, allowed, bias, has_bias, &s); e.failure()) return e;
  float* db = bias_grad ? dbias->typed_data() : nullptr;
  if (db != nullptr) std::memset(db, 0, sizeof(float) * s.B * s.H * s.Q * s.K);  // skipped tiles: no gradient
  DISPATCH_D(s.D, (backward<Dc>(pool, s, q.typed_data(), k.typed_data(), v.typed_data(), allowed.typed_data(), bias.typed_data(), scale, out.typed_data(),
                                lse.typed_data(), dout.typed_data(), dq->typed_data(), dk->typed_data(), dv->typed_data(), db)));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ArchzooAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale")
                                  .Attr<bool>("has_bias")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ArchzooAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale")
                                  .Attr<bool>("has_bias")
                                  .Attr<bool>("bias_grad")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
