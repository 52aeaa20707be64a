// The u8 x s8 -> s32 product on oneDNN (primitives cached by shape and weights layout, bound
// per thread), its exact float32 stand-in, and the u8 codes of an activation row.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <dnnl.hpp>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/cpu_isa.h"
#include "kernels/int_matmul.h"
#include "kernels/load_avx512.h"
#include "kernels/matmul.h"
#include "kernels/onednn.h"
#include "kernels/quantize_step.h"
#include "kernels/quantize_step_avx512.h"
#include "kernels/thread_scratch.h"
#include "util/error.h"

namespace ptq4sam::kernels::int_matmul {

using dnnl::memory;

namespace {

// Scratchpads are the caller's (user mode): several threads may then run the same primitive at
// once (attention heads in parallel), where a library-owned scratchpad would be shared.
dnnl::matmul::primitive_desc matmul_desc(int64_t m, const memory::desc& weights) {
  const memory::desc src({m, weights.dims()[0]}, memory::data_type::u8, memory::format_tag::ab);
  const memory::desc dst({m, weights.dims()[1]}, memory::data_type::s32, memory::format_tag::ab);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), attr, cpu_engine());
}

struct CachedMatmul {
  dnnl::matmul primitive;
  memory::desc scratchpad;
};

// Primitives by rows and weights layout.
const CachedMatmul& cached_primitive(int64_t m, const memory::desc& weights) {
  static std::mutex mutex;
  static std::unordered_map<std::string, CachedMatmul> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  std::string key = std::to_string(m) + ":";
  for (const auto d : weights.dims()) key += std::to_string(d) + ",";
  key += std::to_string(std::hash<std::string>()(std::string(reinterpret_cast<const char*>(&weights.data), sizeof weights.data)));
  const auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  if (cache.size() > 1024) cache.clear();
  const auto pd = matmul_desc(m, weights);
  return cache.emplace(key, CachedMatmul{dnnl::matmul(pd), pd.scratchpad_desc()}).first->second;
}

}  // namespace

memory::desc preferred_weights(int64_t typical_rows, int64_t k, int64_t n) {
  return matmul_desc(typical_rows, memory::desc({k, n}, memory::data_type::s8, memory::format_tag::any)).weights_desc();
}

namespace {

// A primitive ready to run on this thread: its memory objects and arguments made once, their
// data pointers set per call. Making them per call (three memory objects, a map, a stream)
// costs a fair share of a windowed attention head's small product.
struct BoundMatmul {
  int64_t m = -1;
  memory::desc weights;
  CachedMatmul matmul;
  memory src, weight_codes, dst, scratchpad;
  std::unordered_map<int, memory> args;
};

BoundMatmul bind(int64_t m, const memory::desc& weights) {
  BoundMatmul b;
  b.m = m;
  b.weights = weights;
  b.matmul = cached_primitive(m, weights);  // a copy: another thread may clear the cache
  const int64_t k = weights.dims()[0], n = weights.dims()[1];
  b.src = memory({{m, k}, memory::data_type::u8, memory::format_tag::ab}, cpu_engine(), nullptr);
  b.weight_codes = memory(weights, cpu_engine(), nullptr);
  b.dst = memory({{m, n}, memory::data_type::s32, memory::format_tag::ab}, cpu_engine(), nullptr);
  b.args = {{DNNL_ARG_SRC, b.src}, {DNNL_ARG_WEIGHTS, b.weight_codes}, {DNNL_ARG_DST, b.dst}};
  if (b.matmul.scratchpad.get_size() > 0) {
    b.scratchpad = memory(b.matmul.scratchpad, cpu_engine(), nullptr);
    b.args.emplace(DNNL_ARG_SCRATCHPAD, b.scratchpad);
  }
  return b;
}

// The thread's bound primitives, the few it alternates between (an attention head's two
// products, a layer's chunks), replaced in turn.
BoundMatmul& bound(int64_t m, const memory::desc& weights) {
  constexpr size_t kBound = 8;
  thread_local std::vector<BoundMatmul> table;
  thread_local size_t next = 0;
  for (auto& b : table)
    if (b.m == m && b.weights == weights) return b;
  if (table.size() < kBound) return table.emplace_back(bind(m, weights));
  BoundMatmul& slot = table[next++ % kBound];
  slot = bind(m, weights);
  return slot;
}

}  // namespace

void run(int64_t m, const uint8_t* src, const memory::desc& weights, const void* weight_codes, int32_t* dst) {
  BoundMatmul& b = bound(m, weights);
  b.src.set_data_handle(const_cast<uint8_t*>(src));
  b.weight_codes.set_data_handle(const_cast<void*>(weight_codes));
  b.dst.set_data_handle(dst);
  if (const size_t bytes = b.matmul.scratchpad.get_size(); bytes > 0)
    b.scratchpad.set_data_handle(thread_scratch_bytes(Scratch::kOnednnScratchpad, int64_t(bytes)));
  thread_local dnnl::stream stream(cpu_engine());
  b.matmul.primitive.execute(stream, b.args);
  stream.wait();
}

void exact_code_product(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  const int64_t k = a.size(1);
  if (out.scalar_type() == at::kFloat) {
    if (k > kExactSlice) throw Error("exact_code_product: a float32 sum is exact only up to K = 256");
    return matmul_into(a, b, out);
  }
  out.zero_();
  at::Tensor part = at::empty({a.size(0), b.size(1)}, at::kFloat);
  for (int64_t k0 = 0; k0 < k; k0 += kExactSlice) {
    const int64_t len = std::min(kExactSlice, k - k0);
    matmul_into(a.narrow(1, k0, len), b.narrow(0, k0, len), part);
    out.add_(part.to(out.scalar_type()));
  }
}

void run_exact(int64_t m, const uint8_t* src, int64_t k, const uint8_t* w, int64_t n, int64_t row_stride,
               int64_t col_stride, int32_t* dst) {
  if (integer_matmul_exact()) {
    const memory::desc weights({k, n}, memory::data_type::s8, {row_stride, col_stride});
    return run(m, src, weights, w, dst);
  }
  const at::Tensor a = at::from_blob(const_cast<uint8_t*>(src), {m, k}, at::kByte).to(at::kFloat);
  const at::Tensor b = at::from_blob(const_cast<uint8_t*>(w), {k, n}, {row_stride, col_stride}, at::kChar).to(at::kFloat);
  exact_code_product(a, b, at::from_blob(dst, {m, n}, at::kInt));
}

namespace {

static inline __attribute__((always_inline)) int32_t quantize_span_body(
    const float* in, uint8_t* out, int64_t k, float scale, float zero_point, float lo, float hi, int32_t shift) {
  int32_t sum = 0;
  for (int64_t c = 0; c < k; ++c) {
    const int32_t code = int32_t(quantize_step(in[c], scale, zero_point, lo, hi)) + shift;
    out[c] = uint8_t(code);
    sum += code;
  }
  return sum;
}
PTQ4SAM_DISPATCH_BY_ISA(int32_t, quantize_span, (const float* in, uint8_t* out, int64_t k, float scale, float zero_point, float lo, float hi, int32_t shift), (in, out, k, scale, zero_point, lo, hi, shift))

// quantize_step's codes without its division, which bounded the loop: x / scale correctly
// rounded from x * (1 / scale) by Markstein's correction (the exact remainder x - q scale by one
// fused multiply-add, then q + remainder / scale by another). That is the quotient itself,
// wherever it is finite and normal: a check of 4.2e8 values over scales 2^-27 .. 2^12, ties
// included, found no difference. Quotients at or beyond 2^23 keep the uncorrected product (the
// clamp to 2^22 follows), so that an infinite one cannot turn into NaN.
__attribute__((target("avx512f,avx512bw,avx512vl"))) int32_t quantize_span_avx512(const float* in, uint8_t* out, int64_t k,
                                                                float scale, float zero_point, float lo, float hi,
                                                                int32_t shift) {
  const __m512 divisor = _mm512_set1_ps(scale), inverse = _mm512_set1_ps(1.0f / scale);
  const __m512 limit = _mm512_set1_ps(4194304.0f), corrected_below = _mm512_set1_ps(8388608.0f);
  const CodeGrid16 grid = code_grid16(zero_point, lo, hi, shift);
  __m512i sum = _mm512_setzero_si512();
  for (int64_t c = 0; c < k; c += 16) {
    const __mmask16 lanes = lanes16(c, k);
    const __m512 x = load16(in + c, lanes);
    const __m512 guess = _mm512_mul_ps(x, inverse);
    const __m512 remainder = _mm512_fnmadd_ps(guess, divisor, x);
    const __mmask16 finite = _mm512_cmp_ps_mask(_mm512_abs_ps(guess), corrected_below, _CMP_LT_OQ);
    __m512 v = _mm512_mask_blend_ps(finite, guess, _mm512_fmadd_ps(remainder, inverse, guess));
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_sub_ps(_mm512_setzero_ps(), limit)), limit);
    sum = _mm512_add_epi32(sum, store_codes16(v, lanes, grid, out + c));
  }
  return _mm512_reduce_add_epi32(sum);
}

}  // namespace

int32_t quantize_row(const float* in, uint8_t* out, int64_t k, const ActivationQuantization& q, int32_t shift) {
  return (has_avx512() ? quantize_span_avx512 : quantize_span)(in, out, k, q.scale, float(q.zero_point),
                                                         float(q.quant_min), float(q.quant_max), shift);
}

}  // namespace ptq4sam::kernels::int_matmul
