#pragma once
// The quantized artifact: one self-contained .safetensors file. Quantized weights are stored as
// integer codes (code - quant_min, uint8; two per byte, low nibble first, when bit <= 4) with
// per-channel "<layer>.weight_fake_quant.scale" (F32) and ".zero_point" (I32); layers left in FP
// keep their F32 tensors under the official keys; every activation quantizer has ".scale" and
// ".zero_point" (AGQ: ".scale" and ".tau"); BIG's folded signs are "<attention>.big_sign". The
// metadata holds the format version, the tool version, the YAML config, --quant-encoder, the
// BIG decisions and a signature of the model's tensor names and shapes.
#include <memory>
#include <string>

#include "kernels/quantized_linear.h"
#include "quant/quantized_sam.h"

namespace ptq4sam::quant {

constexpr int kArtifactFormatVersion = 1;

void save_artifact(const QuantizedSam& qsam, const std::string& path);

// How a loaded artifact runs. kSimulated: weights dequantized from their codes (so they already
// are the simulated ones: the weight quantizers stay off), activations fake-quantized in
// float32. kInteger: every quantized Linear and Conv2d keeps only its codes and runs u8 x s8
// integer products (kernels/quantized_linear.h), giving the simulated numbers up to float32
// rounding. In both, the image encoder's attentions (per-tensor quantizers) run on their codes
// (kernels/quantized_attention.h), so the two backends' attentions agree bit for bit; every
// other op stays in float32.
enum class Backend { kSimulated, kInteger };

struct LoadOptions {
  Backend backend = Backend::kSimulated;
  // Whether the integer product is exact on this CPU; when not, kInteger leaves the layers
  // simulated (listed in QuantizedSam::integer_layers().fallback).
  bool integer_matmul_exact = kernels::integer_matmul_exact();
};

// Rebuilds the model and its activation quantizers, simulating. Errors name the file: not an
// artifact, a newer format version, tensors that do not match the model.
std::unique_ptr<QuantizedSam> load_artifact(const std::string& path, const LoadOptions& options = {});

// Whether `path` is a safetensors file (else it is taken as an official checkpoint).
bool is_artifact(const std::string& path);

// Packs codes in [0, 15] two per byte along the last axis (low nibble first), and back.
at::Tensor pack_int4(const at::Tensor& codes);
at::Tensor unpack_int4(const at::Tensor& packed, int64_t last_dim);

}  // namespace ptq4sam::quant
