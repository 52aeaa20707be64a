#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu_isa.h"
#include "kernels/load_avx512.h"
#include "kernels/relative_position.h"
#include "util/error.h"

namespace ptq4sam::kernels {
namespace {

int64_t whole_vectors(int64_t n) { return (n + 15) / 16 * 16; }

// out[r][j] = sum_c q[r][c] table[c][j] over `rows` rows (q and out strided, table d x pad),
// summed in order of c, one fused multiply-add each: the generic version's numbers too. Four
// rows at once, so that the FMAs' latency overlaps.
template <int kVectors>
__attribute__((target("avx512f"))) void rows_times_table_avx512(const float* q, int64_t q_stride, int64_t rows,
                                                                const float* table, int64_t d, int64_t pad,
                                                                float* out, int64_t out_stride) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    __m512 acc[4][kVectors];
    for (auto& row : acc)
      for (auto& a : row) a = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      __m512 t[kVectors];
      for (int v = 0; v < kVectors; ++v) t[v] = _mm512_loadu_ps(table + c * pad + 16 * v);
      for (int i = 0; i < 4; ++i) {
        const __m512 x = _mm512_set1_ps(q[(r + i) * q_stride + c]);
        for (int v = 0; v < kVectors; ++v) acc[i][v] = _mm512_fmadd_ps(x, t[v], acc[i][v]);
      }
    }
    for (int i = 0; i < 4; ++i)
      for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(out + (r + i) * out_stride + 16 * v, acc[i][v]);
  }
  for (; r < rows; ++r) {
    __m512 acc[kVectors];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      const __m512 x = _mm512_set1_ps(q[r * q_stride + c]);
      for (int v = 0; v < kVectors; ++v) acc[v] = _mm512_fmadd_ps(x, _mm512_loadu_ps(table + c * pad + 16 * v), acc[v]);
    }
    for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(out + r * out_stride + 16 * v, acc[v]);
  }
}

void rows_times_table_generic(const float* q, int64_t q_stride, int64_t rows, const float* table, int64_t d,
                              int64_t pad, int64_t width, float* out, int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < width; ++j) {
      float acc = 0.0f;
      for (int64_t c = 0; c < d; ++c) acc = std::fma(q[r * q_stride + c], table[c * pad + j], acc);
      out[r * out_stride + j] = acc;
    }
}

// rows_times_table over all `pad` columns, 64 at a time.
void rows_times_table(const float* q, int64_t q_stride, int64_t rows, const float* table, int64_t d, int64_t pad,
                      float* out, int64_t out_stride) {
  for (int64_t j = 0; j < pad; j += 64) {
    const int64_t width = std::min<int64_t>(64, pad - j);
    float* dst = out + j;
    if (!has_avx512()) {
      rows_times_table_generic(q, q_stride, rows, table + j, d, pad, width, dst, out_stride);
      continue;
    }
    switch (width / 16) {
      case 1: rows_times_table_avx512<1>(q, q_stride, rows, table + j, d, pad, dst, out_stride); break;
      case 2: rows_times_table_avx512<2>(q, q_stride, rows, table + j, d, pad, dst, out_stride); break;
      case 3: rows_times_table_avx512<3>(q, q_stride, rows, table + j, d, pad, dst, out_stride); break;
      default: rows_times_table_avx512<4>(q, q_stride, rows, table + j, d, pad, dst, out_stride); break;
    }
  }
}

}  // namespace

RelativeTables relative_tables(const at::Tensor& rel_pos_h, const at::Tensor& rel_pos_w, int64_t d) {
  RelativeTables t;
  if (rel_pos_h.defined() != rel_pos_w.defined() ||
      (rel_pos_h.defined() && (rel_pos_h.dim() != 3 || rel_pos_w.dim() != 3 || rel_pos_h.size(2) != d ||
                               rel_pos_w.size(2) != d)))
    throw Error("quantized attention", "relative positions must be two tables of (queries, keys, head channels)");
  if (!rel_pos_h.defined()) return t;
  t.q_h = rel_pos_h.size(0), t.k_h = rel_pos_h.size(1), t.q_w = rel_pos_w.size(0), t.k_w = rel_pos_w.size(1);
  t.pad_h = whole_vectors(t.k_h), t.pad_w = whole_vectors(t.k_w);
  const auto transposed = [](const at::Tensor& table, int64_t pad) {
    at::Tensor out = at::zeros({table.size(0), table.size(2), pad}, at::kFloat);
    out.narrow(2, 0, table.size(1)).copy_(table.permute({0, 2, 1}));
    return out;
  };
  t.h = transposed(rel_pos_h.to(at::kFloat), t.pad_h);
  t.w = transposed(rel_pos_w.to(at::kFloat), t.pad_w);
  return t;
}

void relative_terms(const float* q_values, int64_t d, const RelativeTables& t, int64_t q_h, int64_t q_w,
                    float* rel_h, float* rel_w) {
  for (int64_t i = 0; i < q_h; ++i)
    rows_times_table(q_values + i * q_w * d, d, q_w, t.h.data_ptr<float>() + i * d * t.pad_h, d, t.pad_h,
                     rel_h + i * q_w * t.pad_h, t.pad_h);
  for (int64_t j = 0; j < q_w; ++j)
    rows_times_table(q_values + j * d, q_w * d, q_h, t.w.data_ptr<float>() + j * d * t.pad_w, d, t.pad_w,
                     rel_w + j * t.pad_w, q_w * t.pad_w);
}

}  // namespace ptq4sam::kernels
