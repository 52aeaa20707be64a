// oneDNN u8 x s8 -> s32 matmul and the passes around it. Primitives are cached by shape, as
// for the float32 matmuls.
#include <ATen/Parallel.h>

#include <dnnl.hpp>
#include <mutex>
#include <string>
#include <unordered_map>

#include "kernels/quantized_linear.h"
#include "util/error.h"

namespace ptq4sam::kernels {

// Reordered once when the weight is made: the matmul then reads the codes as they lie instead
// of repacking them on every call.
struct PackedWeightCodes {
  dnnl::memory::desc desc;
  at::Tensor bytes;
};

namespace {

using dnnl::memory;

dnnl::engine& engine() {
  static dnnl::engine cpu(dnnl::engine::kind::cpu, 0);
  return cpu;
}

// The rows of the product every layer of SAM's encoder sees: its packed layout is chosen for it.
constexpr int64_t kTypicalRows = 4096;

dnnl::matmul::primitive_desc int_matmul_desc(int64_t m, const memory::desc& weights) {
  const memory::desc src({m, weights.dims()[0]}, memory::data_type::u8, memory::format_tag::ab);
  const memory::desc dst({m, weights.dims()[1]}, memory::data_type::s32, memory::format_tag::ab);
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), engine());
}

// Primitives by rows and weights layout.
dnnl::matmul& int_matmul(int64_t m, const memory::desc& weights) {
  static std::mutex mutex;
  static std::unordered_map<std::string, dnnl::matmul> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  std::string key = std::to_string(m) + ":";
  for (const auto d : weights.dims()) key += std::to_string(d) + ",";
  key += std::to_string(std::hash<std::string>()(std::string(reinterpret_cast<const char*>(&weights.data), sizeof weights.data)));
  const auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  if (cache.size() > 1024) cache.clear();
  return cache.emplace(key, dnnl::matmul(int_matmul_desc(m, weights))).first->second;
}

std::shared_ptr<const PackedWeightCodes> pack_codes(const at::Tensor& codes) {
  const int64_t k = codes.size(0), n = codes.size(1);
  const memory::desc plain({k, n}, memory::data_type::s8, memory::format_tag::ab);
  const memory::desc any({k, n}, memory::data_type::s8, memory::format_tag::any);
  auto packed = std::make_shared<PackedWeightCodes>();
  packed->desc = int_matmul_desc(kTypicalRows, any).weights_desc();
  packed->bytes = at::empty({int64_t(packed->desc.get_size())}, at::kByte);
  memory from(plain, engine(), codes.data_ptr()), to(packed->desc, engine(), packed->bytes.data_ptr());
  dnnl::stream stream(engine());
  dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
  return packed;
}

// u8 codes of x (M, K) and their row sums.
void quantize_rows(const at::Tensor& x, const ActivationQuantization& q, int32_t shift, at::Tensor& codes,
                   at::Tensor& row_sums) {
  const int64_t m = x.size(0), k = x.size(1);
  const float* in = x.data_ptr<float>();
  uint8_t* out = codes.data_ptr<uint8_t>();
  int32_t* sums = row_sums.data_ptr<int32_t>();
  const float scale = q.scale, zero_point = float(q.zero_point);
  const float lo = float(q.quant_min), hi = float(q.quant_max);
  at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int32_t sum = 0;
      for (int64_t c = 0; c < k; ++c) {
        // The fake quantizer's float32 steps: round(x / s) + z, then the clamp.
        const float code = std::min(std::max(std::nearbyint(in[r * k + c] / scale) + zero_point, lo), hi);
        const int32_t stored = int32_t(code) + shift;
        out[r * k + c] = uint8_t(stored);
        sum += stored;
      }
      sums[r] = sum;
    }
  });
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
  w.codes = shifted.t().contiguous().to(at::kChar);
  w.scale = scale.to(at::kFloat).reshape({-1}).contiguous();
  w.zero_point = (zero_point.to(at::kInt).reshape({-1}) + shift).contiguous();
  if (w.scale.numel() == 1 && c.size(0) > 1) {
    w.scale = w.scale.expand({c.size(0)}).contiguous();
    w.zero_point = w.zero_point.expand({c.size(0)}).contiguous();
  }
  w.code_sums = shifted.sum(1, false, at::kInt).contiguous();
  w.packed = pack_codes(w.codes);
  if (bias.defined()) w.bias = bias.to(at::kFloat).contiguous();
  return w;
}

at::Tensor quantized_linear(const at::Tensor& x, const ActivationQuantization& input, const QuantizedWeight& weight,
                            Activation activation) {
  const int64_t k = weight.in_features(), n = weight.out_features();
  if (x.size(-1) != k) throw Error("quantized linear", "input has " + std::to_string(x.size(-1)) + " features, weight " + std::to_string(k));
  if (input.quant_min < -128 || input.quant_max > 255 || input.quant_max - input.quant_min > 255)
    throw Error("quantized linear", "activation grid does not fit 8 bits");
  const at::Tensor x2 = x.reshape({-1, k}).to(at::kFloat).contiguous();
  const int64_t m = x2.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = n;
  at::Tensor out = at::empty({m, n}, at::kFloat);
  if (m == 0) return out.view(out_shape);

  // Signed activation grids move up into u8, their zero point with them.
  const int32_t shift = input.quant_min < 0 ? 128 : 0;
  at::Tensor codes = at::empty({m, k}, at::kByte), row_sums = at::empty({m}, at::kInt);
  quantize_rows(x2, input, shift, codes, row_sums);
  at::Tensor accumulators = at::empty({m, n}, at::kInt);
  {
    dnnl::matmul& prim = int_matmul(m, weight.packed->desc);
    const memory src({{m, k}, memory::data_type::u8, memory::format_tag::ab}, engine(), codes.data_ptr());
    const memory wei(weight.packed->desc, engine(), weight.packed->bytes.data_ptr());
    const memory dst({{m, n}, memory::data_type::s32, memory::format_tag::ab}, engine(), accumulators.data_ptr());
    dnnl::stream stream(engine());
    prim.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
    stream.wait();
  }

  // sum_k (a - za)(w - zw) = acc - zw * sum(a) - za * sum(w) + K za zw, then the two scales.
  const int64_t za = input.zero_point + shift;
  const int32_t* acc = accumulators.data_ptr<int32_t>();
  const int32_t* a_sums = row_sums.data_ptr<int32_t>();
  const int32_t* w_sums = weight.code_sums.data_ptr<int32_t>();
  const int32_t* zw = weight.zero_point.data_ptr<int32_t>();
  const float* w_scale = weight.scale.data_ptr<float>();
  const float* bias = weight.bias.defined() ? weight.bias.data_ptr<float>() : nullptr;
  float* y = out.data_ptr<float>();
  std::vector<float> scale(static_cast<size_t>(n));
  std::vector<int64_t> column_term(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    scale[size_t(j)] = input.scale * w_scale[j];
    column_term[size_t(j)] = -za * int64_t(w_sums[j]) + k * za * int64_t(zw[j]);
  }
  at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t exact = int64_t(acc[r * n + j]) - int64_t(zw[j]) * a_sums[r] + column_term[size_t(j)];
        y[r * n + j] = float(exact) * scale[size_t(j)] + (bias ? bias[j] : 0.0f);
      }
    }
  });
  if (activation == Activation::kGelu) at::gelu_(out);
  if (activation == Activation::kRelu) at::relu_(out);
  return out.view(out_shape);
}

}  // namespace ptq4sam::kernels
