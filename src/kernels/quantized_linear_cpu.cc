// The integer Linear: weights packed once into oneDNN's layout, activations quantized into u8
// codes, the u8 x s8 product (kernels/int_matmul.h), and the output passes (dequantize, bias,
// activation, residual, or straight into the next layer's codes).
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <immintrin.h>

#include <dnnl.hpp>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/gelu.h"
#include "kernels/int_matmul.h"
#include "kernels/load_avx512.h"
#include "kernels/onednn.h"
#include "kernels/quantized_linear.h"
#include "kernels/quantize_step.h"
#include "kernels/quantize_step_avx512.h"
#include "kernels/thread_scratch.h"
#include "util/error.h"

namespace ptq4sam::kernels {


namespace {

using dnnl::memory;

// The rows of the product every layer of SAM's encoder sees: its packed layout is chosen for it.
constexpr int64_t kTypicalRows = 4096;

// Two signed 4-bit codes per byte and back, in groups of 128 codes: byte j of a group holds
// code j in its low nibble and code 64 + j in its high one. Unpacking then needs no shuffles:
// each half of a group is one vector's nibbles, sign-extended by (nibble ^ 8) - 8. The blocked
// layout's padding (zeros) packs too.
constexpr int64_t kNibbleGroup = 128;

static inline __attribute__((always_inline)) void pack_nibbles_body(const int8_t* in, uint8_t* out,
                                                                                int64_t groups) {
  constexpr int64_t half = kNibbleGroup / 2;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t j = 0; j < half; ++j)
      // The high code's bits as unsigned before the shift: shifting a negative int is undefined.
      out[g * half + j] = uint8_t((in[g * kNibbleGroup + j] & 0x0f) | ((in[g * kNibbleGroup + half + j] & 0x0f) << 4));
}
PTQ4SAM_DISPATCH_BY_ISA(void, pack_nibbles, (const int8_t* in, uint8_t* out, int64_t groups), (in, out, groups))

static inline __attribute__((always_inline)) void unpack_nibble_groups_body(const uint8_t* in, int8_t* out,
                                                                                        int64_t groups) {
  constexpr int64_t half = kNibbleGroup / 2;
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* bytes = in + g * half;
    int8_t* low = out + g * kNibbleGroup;
    int8_t* high = low + half;
    for (int64_t j = 0; j < half; ++j) {
      low[j] = int8_t(((bytes[j] & 0x0f) ^ 0x08) - 0x08);
      high[j] = int8_t(((bytes[j] >> 4) ^ 0x08) - 0x08);
    }
  }
}
PTQ4SAM_DISPATCH_BY_ISA(void, unpack_nibble_groups, (const uint8_t* in, int8_t* out, int64_t groups), (in, out, groups))

// A layer's weights are unpacked on every call (each block's MLP once per row chunk): in
// parallel.
void unpack_nibbles(const uint8_t* in, int8_t* out, int64_t groups) {
  at::parallel_for(0, groups, 2048, [&](int64_t begin, int64_t end) {
    unpack_nibble_groups(in + begin * kNibbleGroup / 2, out + begin * kNibbleGroup, end - begin);
  });
}

// `codes` (K, N) int8, contiguous.
std::shared_ptr<const PackedWeightCodes> pack_codes(const at::Tensor& codes, bool nibbles) {
  const int64_t k = codes.size(0), n = codes.size(1);
  const memory::desc plain({k, n}, memory::data_type::s8, memory::format_tag::ab);
  auto packed = std::make_shared<PackedWeightCodes>();
  packed->desc = int_matmul::preferred_weights(kTypicalRows, k, n);
  const int64_t size = int64_t(packed->desc.get_size());
  const int64_t groups = nibbles ? (size + kNibbleGroup - 1) / kNibbleGroup : 0;
  at::Tensor blocked = at::zeros({std::max(size, groups * kNibbleGroup)}, at::kChar);
  memory from(plain, cpu_engine(), codes.data_ptr()), to(packed->desc, cpu_engine(), blocked.data_ptr());
  dnnl::stream stream(cpu_engine());
  dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
  packed->nibbles = nibbles;
  if (nibbles) {
    packed->bytes = at::empty({groups * kNibbleGroup / 2}, at::kByte);
    pack_nibbles(blocked.data_ptr<int8_t>(), packed->bytes.data_ptr<uint8_t>(), groups);
  } else {
    packed->bytes = blocked.narrow(0, 0, size).contiguous();
  }
  return packed;
}

// One output row: sum_k (a - za)(w - zw) = acc - zw * sum(a) + column_term, scaled, plus bias,
// rounded after the product and after the sum as code_linear's separate ATen ops are: never
// contracted into a fused multiply-add (the library builds with -ffp-contract=off, and a
// function-level optimize attribute would not reliably keep that).
static inline __attribute__((always_inline)) void dequantize_row_loop_body(
    const int32_t* acc, float* y, int64_t n, int32_t a_sum, const int32_t* zw, const int32_t* column_term,
    const float* scale, const float* bias) {
  for (int64_t j = 0; j < n; ++j) y[j] = float(acc[j] - zw[j] * a_sum + column_term[j]) * scale[j] + bias[j];
}
PTQ4SAM_DISPATCH_BY_ISA(void, dequantize_row_loop, (const int32_t* acc, float* y, int64_t n, int32_t a_sum, const int32_t* zw, const int32_t* column_term, const float* scale, const float* bias), (acc, y, n, a_sum, zw, column_term, scale, bias))

// The same in whole 512-bit vectors (GCC's clone used 256-bit ones), masked at the tail; the
// product and the sum rounded apart here too.
__attribute__((target("avx512f"), optimize("fp-contract=off"))) void dequantize_row_avx512(
    const int32_t* acc, float* y, int64_t n, int32_t a_sum, const int32_t* zw, const int32_t* column_term,
    const float* scale, const float* bias) {
  const __m512i sum = _mm512_set1_epi32(a_sum);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 lanes = lanes16(j, n);
    const __m512i zero_terms = _mm512_mullo_epi32(load16(zw + j, lanes), sum);
    const __m512i total =
        _mm512_add_epi32(_mm512_sub_epi32(load16(acc + j, lanes), zero_terms), load16(column_term + j, lanes));
    const __m512 scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(total), load16(scale + j, lanes));
    _mm512_mask_storeu_ps(y + j, lanes, _mm512_add_ps(scaled, load16(bias + j, lanes)));
  }
}

void dequantize_row(const int32_t* acc, float* y, int64_t n, int32_t a_sum, const int32_t* zw,
                    const int32_t* column_term, const float* scale, const float* bias) {
  (has_avx512() ? dequantize_row_avx512 : dequantize_row_loop)(acc, y, n, a_sum, zw, column_term, scale, bias);
}

void check_grid(const ActivationQuantization& q) {
  if (q.quant_min < -128 || q.quant_max > 255 || q.quant_max - q.quant_min > 255)
    throw Error("quantized linear", "activation grid does not fit 8 bits");
}

// The s8 codes of int4 weights, unpacked for the last two layers that asked on this thread:
// an encoder block's MLP runs lin1 and lin2 once per row chunk and would otherwise unpack them
// each time. Held by weak pointers, so a freed weight never matches a new one at its address.
const int8_t* unpacked_codes(const std::shared_ptr<const PackedWeightCodes>& packed) {
  struct Entry {
    std::weak_ptr<const PackedWeightCodes> owner;
    at::Tensor codes;
  };
  thread_local Entry entries[2];
  thread_local size_t next = 0;
  for (const Entry& entry : entries)
    if (entry.owner.lock() == packed) return entry.codes.data_ptr<int8_t>();
  Entry& entry = entries[next];
  next = (next + 1) % 2;
  const int64_t count = 2 * packed->bytes.numel();
  if (!entry.codes.defined() || entry.codes.numel() < count) entry.codes = at::empty({count}, at::kChar);
  entry.owner = packed;
  unpack_nibbles(packed->bytes.data_ptr<uint8_t>(), entry.codes.data_ptr<int8_t>(), count / kNibbleGroup);
  return entry.codes.data_ptr<int8_t>();
}

}  // namespace

QuantizedWeight make_quantized_weight(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& zero_point,
                                      int bits, bool symmetric, const at::Tensor& bias) {
  if (bits < 2 || bits > 8) throw Error("quantized weight", "bit width " + std::to_string(bits) + " is not in 2..8");
  const int64_t qmin = symmetric ? -(int64_t(1) << (bits - 1)) : 0;
  const int64_t qmax = symmetric ? (int64_t(1) << (bits - 1)) - 1 : (int64_t(1) << bits) - 1;
  const at::Tensor c = codes.to(at::kInt);
  if (c.numel() > 0 && (c.min().item<int64_t>() < qmin || c.max().item<int64_t>() > qmax))
    throw Error("quantized weight", "codes outside [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "]");
  const int32_t shift = symmetric ? 0 : -(int32_t(1) << (bits - 1));
  QuantizedWeight w;
  const at::Tensor shifted = c + shift;
  w.in_features = c.size(1);
  w.scale = scale.to(at::kFloat).reshape({-1}).contiguous();
  w.zero_point = (zero_point.to(at::kInt).reshape({-1}) + shift).contiguous();
  if (w.scale.numel() == 1 && c.size(0) > 1) {
    w.scale = w.scale.expand({c.size(0)}).contiguous();
    w.zero_point = w.zero_point.expand({c.size(0)}).contiguous();
  }
  w.code_sums = shifted.sum(1, false, at::kInt).contiguous();
  w.packed = pack_codes(shifted.t().contiguous().to(at::kChar), bits <= 4);
  if (bias.defined()) w.bias = bias.to(at::kFloat).contiguous();
  return w;
}

int64_t QuantizedWeight::resident_bytes() const {
  int64_t bytes = packed ? packed->bytes.nbytes() : 0;
  for (const at::Tensor* t : {&scale, &zero_point, &code_sums, &bias})
    if (t->defined()) bytes += int64_t(t->nbytes());
  return bytes;
}

at::Tensor code_linear(const at::Tensor& a_codes, const at::Tensor& w_codes, const at::Tensor& scale,
                       const at::Tensor& bias, Activation activation) {
  const int64_t k = w_codes.size(1), n = w_codes.size(0);
  const at::Tensor a = a_codes.reshape({-1, k}).contiguous();
  const int64_t m = a.size(0);
  at::Tensor acc = at::empty({m, n}, k <= int_matmul::kExactSlice ? at::kFloat : at::kDouble);
  int_matmul::exact_code_product(a, w_codes.t(), acc);
  acc = acc.to(at::kFloat);
  at::Tensor out = acc.mul_(scale);
  if (bias.defined()) out.add_(bias);
  if (activation == Activation::kGelu) kernels::gelu_(out);
  if (activation == Activation::kRelu) at::relu_(out);
  std::vector<int64_t> out_shape(a_codes.sizes().begin(), a_codes.sizes().end());
  out_shape.back() = n;
  return out.view(out_shape);
}

bool integer_matmul_exact() {
  // oneDNN fixes its ISA at first use: asked once. cpu_vnni() may still turn it off (tests).
  static const bool onednn_vnni = [] {
    cpu_engine();  // applies PTQ4SAM_CPU's cap first
    const auto isa = dnnl::get_effective_cpu_isa();
    return isa == dnnl::cpu_isa::avx512_core_vnni || isa == dnnl::cpu_isa::avx512_core_bf16 ||
           isa == dnnl::cpu_isa::avx512_core_amx || isa == dnnl::cpu_isa::avx2_vnni;
  }();
  return onednn_vnni && cpu_vnni();
}

ActivationCodes quantize_activations(const at::Tensor& x, const ActivationQuantization& input) {
  check_grid(input);
  const int64_t k = x.size(-1);
  const at::Tensor x2 = x.reshape({-1, k}).to(at::kFloat).contiguous();
  const int64_t m = x2.size(0);
  ActivationCodes a;
  a.quant = input;
  // Signed activation grids move up into u8, their zero point with them.
  a.shift = int_matmul::u8_shift(input);
  a.codes = at::empty({m, k}, at::kByte);
  a.row_sums.resize(static_cast<size_t>(m));
  const float* in = x2.data_ptr<float>();
  uint8_t* codes = a.codes.data_ptr<uint8_t>();
  RECORD_FUNCTION("ptq4sam::quantized_linear.codes", std::vector<c10::IValue>());
  at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      a.row_sums[size_t(r)] = int_matmul::quantize_row(in + r * k, codes + r * k, k, input, a.shift);
  });
  return a;
}

namespace {

// The terms of each output column: the product of the two scales, the zero points' column term
// and the bias (0 where there is none).
struct OutputTerms {
  std::vector<float> scale, bias;
  std::vector<int32_t> column_term;
};

OutputTerms output_terms(const ActivationCodes& a, const QuantizedWeight& weight) {
  const int64_t k = weight.in_features, n = weight.out_features();
  const int32_t za = a.quant.zero_point + a.shift;
  const int32_t* w_sums = weight.code_sums.data_ptr<int32_t>();
  const int32_t* zw = weight.zero_point.data_ptr<int32_t>();
  const float* w_scale = weight.scale.data_ptr<float>();
  OutputTerms t;
  t.scale.resize(size_t(n));
  t.bias.assign(size_t(n), 0.0f);
  t.column_term.resize(size_t(n));
  for (int64_t j = 0; j < n; ++j) {
    t.scale[size_t(j)] = a.quant.scale * w_scale[j];
    t.column_term[size_t(j)] = int_matmul::column_term(za, zw[j], k, w_sums[j]);
    if (weight.bias.defined()) t.bias[size_t(j)] = weight.bias.data_ptr<float>()[j];
  }
  return t;
}

// The s32 products of the codes with the weight's, in a workspace reused across calls.
const int32_t* integer_product(const ActivationCodes& a, const QuantizedWeight& weight) {
  const int64_t k = weight.in_features, n = weight.out_features(), m = a.rows();
  if (a.codes.size(1) != k)
    throw Error("quantized linear", "input has " + std::to_string(a.codes.size(1)) + " features, weight " + std::to_string(k));
  if (k > (int64_t(1) << 15)) throw Error("quantized linear", "more than 2^15 input features overflow int32 sums");
  int32_t* acc = thread_scratch<int32_t>(Scratch::kLinearAccumulators, m * n);
  if (m == 0) return acc;
  const PackedWeightCodes& packed = *weight.packed;
  const void* weight_codes = packed.bytes.data_ptr();
  if (packed.nibbles) {
    RECORD_FUNCTION("ptq4sam::quantized_linear.unpack", std::vector<c10::IValue>());
    weight_codes = unpacked_codes(weight.packed);
  }
  RECORD_FUNCTION("ptq4sam::quantized_linear.product", std::vector<c10::IValue>());
  int_matmul::run(m, a.codes.data_ptr<uint8_t>(), packed.desc, weight_codes, acc);
  return acc;
}

// The activation of one output row, in place: the same numbers as over the whole tensor.
void activate_row(float* row, int64_t n, Activation activation) {
  if (activation == Activation::kGelu) gelu_inplace(row, n);
  if (activation == Activation::kRelu)
    for (int64_t j = 0; j < n; ++j) row[j] = std::max(row[j], 0.0f);
}

// y[j] = x[j] + y[j]: the residual added as at::add(x, layer(x)) adds it.
static inline __attribute__((always_inline)) void add_row_body(const float* x, float* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = x[j] + y[j];
}
PTQ4SAM_DISPATCH_BY_ISA(void, add_row, (const float* x, float* y, int64_t n), (x, y, n))

}  // namespace

at::Tensor quantized_linear(const ActivationCodes& a, const QuantizedWeight& weight, Activation activation,
                            const at::Tensor& residual, at::Tensor out) {
  const int64_t m = a.rows(), n = weight.out_features();
  const int32_t* acc = integer_product(a, weight);
  if (!out.defined()) out = at::empty({m, n}, at::kFloat);
  if (out.scalar_type() != at::kFloat || !out.is_contiguous() || out.numel() != m * n)
    throw Error("quantized linear", "output is not a contiguous float32 tensor of its size");
  const at::Tensor res = residual.defined() ? residual.reshape({m, n}).to(at::kFloat).contiguous() : at::Tensor();
  const OutputTerms t = output_terms(a, weight);
  const int32_t* zw = weight.zero_point.data_ptr<int32_t>();
  float* y = out.data_ptr<float>();
  RECORD_FUNCTION("ptq4sam::quantized_linear.output", std::vector<c10::IValue>());
  at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* row = y + r * n;
      dequantize_row(acc + r * n, row, n, a.row_sums[size_t(r)], zw, t.column_term.data(), t.scale.data(), t.bias.data());
      activate_row(row, n, activation);
      if (res.defined()) add_row(res.data_ptr<float>() + r * n, row, n);
    }
  });
  return out;
}

namespace {

// The output pass into bytes: (rows, N) codes, block by block, and each row's sum where
// `row_sums` is given.
void output_codes(const ActivationCodes& a, const QuantizedWeight& weight, Activation activation,
                  const std::vector<CodeBlock>& blocks, uint8_t* codes, int32_t* row_sums) {
  const int64_t m = a.rows(), n = weight.out_features();
  const int64_t width = blocks.empty() ? 0 : n / int64_t(blocks.size());
  if (blocks.empty() || width * int64_t(blocks.size()) != n)
    throw Error("quantized linear", "output columns do not split into " + std::to_string(blocks.size()) + " blocks");
  for (const CodeBlock& block : blocks) check_grid(block.quant);
  const int32_t* acc = integer_product(a, weight);
  const OutputTerms t = output_terms(a, weight);
  const int32_t* zw = weight.zero_point.data_ptr<int32_t>();
  RECORD_FUNCTION("ptq4sam::quantized_linear.output_codes", std::vector<c10::IValue>());
  at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
    // One row at a time through a buffer that stays in cache: the float32 rows never reach memory.
    std::vector<float> row(static_cast<size_t>(n));
    for (int64_t r = begin; r < end; ++r) {
      dequantize_row(acc + r * n, row.data(), n, a.row_sums[size_t(r)], zw, t.column_term.data(), t.scale.data(),
                     t.bias.data());
      activate_row(row.data(), n, activation);
      int32_t sum = 0;
      for (size_t b = 0; b < blocks.size(); ++b) {
        const int64_t j = int64_t(b) * width;
        sum += int_matmul::quantize_row(row.data() + j, codes + r * n + j, width, blocks[b].quant, blocks[b].shift);
      }
      if (row_sums) row_sums[r] = sum;
    }
  });
}

}  // namespace

ActivationCodes quantized_linear_codes(const ActivationCodes& a, const QuantizedWeight& weight, Activation activation,
                                       const ActivationQuantization& next) {
  check_grid(next);
  ActivationCodes b;
  b.quant = next;
  b.shift = int_matmul::u8_shift(next);
  b.codes = at::empty({a.rows(), weight.out_features()}, at::kByte);
  b.row_sums.resize(size_t(a.rows()));
  output_codes(a, weight, activation, {CodeBlock{next, b.shift}}, b.codes.data_ptr<uint8_t>(), b.row_sums.data());
  return b;
}

at::Tensor quantized_linear_block_codes(const ActivationCodes& a, const QuantizedWeight& weight, Activation activation,
                                        const std::vector<CodeBlock>& blocks) {
  at::Tensor codes = at::empty({a.rows(), weight.out_features()}, at::kByte);
  output_codes(a, weight, activation, blocks, codes.data_ptr<uint8_t>(), nullptr);
  return codes;
}

at::Tensor quantized_linear(const at::Tensor& x, const ActivationQuantization& input, const QuantizedWeight& weight,
                            Activation activation) {
  // The product checks the width.
  const int64_t n = weight.out_features();
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = n;
  return quantized_linear(quantize_activations(x, input), weight, activation).view(out_shape);
}

}  // namespace ptq4sam::kernels
