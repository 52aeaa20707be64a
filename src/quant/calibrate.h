#pragma once
// PTQ4SAM-S calibration, in the seed's order (DESIGN.md, "Calibration"): (1) with BIG, run the
// first sample with every quantizer off, detect bimodal keys in the token-to-image attentions
// and fold the channel signs into q_proj/k_proj; (2) activation observers over all samples,
// once per image (all its boxes in one decoder batch); (3) weight observers on the (folded)
// weights; (4) every quantizer simulates. Samples are read one at a time from `source`.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "quant/quantized_sam.h"
#include "sam/predictor.h"

namespace ptq4sam::quant {

struct CalibrationSample {
  std::string name;
  at::Tensor image;  // H x W x 3 RGB uint8
  std::vector<sam::Box> boxes;
};

using SampleSource = std::function<CalibrationSample(size_t index)>;

// A sample's boxes as the decoder's prompts (all of them go in one batch).
std::vector<sam::Prompt> box_prompts(const CalibrationSample& sample);
// stage ("big", "activations", "weights", "measure"), samples done, samples in the stage
using CalibrationProgress = std::function<void(const std::string& stage, size_t done, size_t total)>;

struct CalibrationStats {
  double seconds = 0;  // steps (1) to (4)
  size_t samples = 0;
  size_t boxes = 0;
};

CalibrationStats calibrate(QuantizedSam& qsam, size_t count, const SampleSource& source,
                           const CalibrationProgress& progress = nullptr);

// Per-quantizer SQNR (kMeasure over the samples: each quantizer sees FP inputs) and the
// end-to-end SQNR of the simulated model's outputs against FP32 on the same samples. Leaves
// the model simulating. Without `per_quantizer` only the end-to-end numbers are measured (the
// quantizers' accumulated SQNR is left untouched).
struct QuantizationQuality {
  std::map<std::string, double> quantizer_sqnr_db;
  double embedding_sqnr_db = 0;  // image embedding (infinite when the encoder is FP)
  double mask_logits_sqnr_db = 0;  // low-res mask logits of the decoder
  double mask_agreement = 0;       // fraction of low-res mask pixels with the same sign
};
QuantizationQuality measure_quality(QuantizedSam& qsam, size_t count, const SampleSource& source,
                                    const CalibrationProgress& progress = nullptr, bool per_quantizer = true);

// SQNR in dB of `approx` against `reference`: 10 log10(sum ref^2 / sum (approx - ref)^2).
double sqnr_db(const at::Tensor& reference, const at::Tensor& approx);

}  // namespace ptq4sam::quant
