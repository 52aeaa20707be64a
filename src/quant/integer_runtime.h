#pragma once
// The integer runtime's wiring: which of a quantized model's layers run on integer codes, and
// the kernels attached to them (kernels/quantized_linear.h, kernels/quantized_attention.h).
// The artifact reader (quant/artifact.h) decides nothing here: it asks IntegerPlan per weight
// and hands the codes over through a WeightReader.
#include <ATen/ATen.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "quant/quantized_sam.h"

namespace ptq4sam::quant {

// A quantized weight as stored: its codes on the weight grid as (out, in) int32 (the codes
// themselves, not shifted by quant_min), per-row (out, 1) scale and zero point, its bit width,
// and the layer's bias (undefined when it has none).
struct StoredWeight {
  at::Tensor codes, scale, zero_point, bias;
  int bit = 8;
};

// Which quantized weights run on integer codes. A layer does when the integer backend is asked
// for, the product is exact on this CPU (kernels::integer_matmul_exact), its inputs are
// per-tensor of at most 8 bits (one zero point per row sum), and its reduction fits the exact
// int32 sums (K <= 2^15).
class IntegerPlan {
 public:
  IntegerPlan(bool integer_backend, const QuantConfig& config, bool integer_matmul_exact);
  // Whether the weight `key` of a layer with `in_features` inputs runs on codes (then recorded);
  // under the integer backend a layer that cannot is recorded as falling back to simulation.
  bool admit(const std::string& key, int64_t in_features);
  bool integer_backend() const { return integer_backend_; }
  const std::set<std::string>& on_codes() const { return on_codes_; }

  // Attaches the kernels to `qsam` (built with this plan's config) and records them in
  // qsam.integer_layers(): an IntegerLinear on every admitted layer, its codes read one layer at
  // a time through `read`; an IntegerAttention on every image-encoder attention when the
  // encoder is quantized with per-tensor inputs, in both backends (their exact integer sums and
  // exponential are then the simulated numbers too, which the integer runtime must match bit for
  // bit: a one-ulp difference in a probability flips a code now and then, and in a random-weight
  // model such flips grow block by block to whole quantization steps). Under the integer backend
  // the position embedding is held in float16, the values a quantized model has (QuantizedSam).
  using WeightReader = std::function<StoredWeight(const std::string& key)>;
  void attach(QuantizedSam& qsam, const WeightReader& read) const;

 private:
  bool integer_backend_, integer_matmul_exact_, per_tensor_inputs_, symmetric_weights_;
  std::set<std::string> on_codes_;
  std::vector<std::string> fallback_;
};

}  // namespace ptq4sam::quant
