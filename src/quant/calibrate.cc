#include "quant/calibrate.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "util/error.h"

namespace ptq4sam::quant {
std::vector<sam::Prompt> box_prompts(const CalibrationSample& sample) {
  std::vector<sam::Prompt> prompts;
  for (const auto& box : sample.boxes) {
    sam::Prompt p;
    p.box = box;
    prompts.push_back(p);
  }
  return prompts;
}

namespace {

// Encoder on the image, decoder on all its boxes in one batch: what observers see per image.
sam::Prediction run_sample(sam::Predictor& predictor, const CalibrationSample& sample) {
  predictor.set_image(sample.image);
  return predictor.predict(box_prompts(sample), /*multimask_output=*/false, /*return_logits=*/true);
}

void report(const CalibrationProgress& progress, const std::string& stage, size_t done, size_t total) {
  if (progress) progress(stage, done, total);
}

void fold_sign(sam::Linear& linear, const at::Tensor& sign) {
  linear.weight.mul_(sign.unsqueeze(1));
  linear.bias.mul_(sign);
}

}  // namespace

double sqnr_db(const at::Tensor& reference, const at::Tensor& approx) {
  Energies energies;
  energies.add(reference, approx);
  return energies.sqnr_db();
}

CalibrationStats calibrate(QuantizedSam& qsam, size_t count, const SampleSource& source,
                           const CalibrationProgress& progress) {
  if (count == 0) throw Error("calibrate", "no calibration samples");
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  sam::Predictor predictor(qsam.model());
  predictor.set_decoder_chunk(0);
  CalibrationStats stats;

  // (1) BIG: the first sample with every quantizer off; keys captured as the decoder sees them.
  if (qsam.config().ptq4sam.big && !qsam.big_sites().empty()) {
    report(progress, "big", 0, 1);
    qsam.set_mode(QuantMode::kOff);
    for (auto& site : qsam.big_sites()) site.keys->capture_next();
    run_sample(predictor, source(0));
    for (auto& site : qsam.big_sites()) {
      const at::Tensor keys = site.keys->take_captured();
      if (!keys.defined()) throw Error(site.name, "saw no keys during BIG detection");
      site.decision = detect_bimodal(keys, qsam.config().ptq4sam.bimodal);
      if (site.decision.bimodal) {
        fold_sign(*site.attention->k_proj, site.decision.sign);
        fold_sign(*site.attention->q_proj, site.decision.sign);
      }
    }
    report(progress, "big", 1, 1);
  }

  // (2) Activation observers, once per image.
  qsam.set_mode(QuantMode::kCalibrate, QuantizedSam::Which::kActivations);
  report(progress, "activations", 0, count);
  for (size_t i = 0; i < count; ++i) {
    const CalibrationSample sample = source(i);
    run_sample(predictor, sample);
    stats.boxes += sample.boxes.size();
    report(progress, "activations", i + 1, count);
  }
  stats.samples = count;

  // (3) Weight observers once, on the weights as they now are (BIG folded).
  qsam.set_mode(QuantMode::kCalibrate, QuantizedSam::Which::kWeights);
  const auto named = qsam.model()->named_parameters(/*recurse=*/true);
  std::vector<Quantizer*> weight_quantizers;
  for (const auto& q : qsam.quantizers())
    if (q->is_weight()) weight_quantizers.push_back(q.get());
  report(progress, "weights", 0, weight_quantizers.size());
  for (size_t i = 0; i < weight_quantizers.size(); ++i) {
    Quantizer& q = *weight_quantizers[i];
    const std::string key = q.weight_key();
    const at::Tensor* weight = named.find(key);
    if (!weight) throw Error(q.name(), "has no weight '" + key + "' in the model");
    q.apply(*weight, at::Tensor());
    report(progress, "weights", i + 1, weight_quantizers.size());
  }

  // (4) Quantize.
  qsam.set_mode(QuantMode::kSimulate);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

QuantizationQuality measure_quality(QuantizedSam& qsam, size_t count, const SampleSource& source,
                                    const CalibrationProgress& progress, bool per_quantizer) {
  torch::NoGradGuard no_grad;
  sam::Predictor predictor(qsam.model());
  predictor.set_decoder_chunk(0);
  QuantizationQuality quality;
  Energies embedding, mask_logits;
  double agree = 0, pixels = 0;
  report(progress, "measure", 0, count);
  for (size_t i = 0; i < count; ++i) {
    const CalibrationSample sample = source(i);
    qsam.set_mode(per_quantizer ? QuantMode::kMeasure : QuantMode::kOff);
    const sam::Prediction fp = run_sample(predictor, sample);
    const at::Tensor fp_embedding = predictor.features();
    qsam.set_mode(QuantMode::kSimulate);
    const sam::Prediction q = run_sample(predictor, sample);
    embedding.add(fp_embedding, predictor.features());
    const at::Tensor fp_logits = fp.low_res, q_logits = q.low_res;
    mask_logits.add(fp_logits, q_logits);
    agree += ((fp_logits > 0) == (q_logits > 0)).sum().item<double>();
    pixels += double(fp_logits.numel());
    report(progress, "measure", i + 1, count);
  }
  quality.embedding_sqnr_db = embedding.sqnr_db();
  quality.mask_logits_sqnr_db = mask_logits.sqnr_db();
  quality.mask_agreement = pixels > 0 ? agree / pixels : 1.0;
  if (!per_quantizer) return quality;
  const auto named = qsam.model()->named_parameters(/*recurse=*/true);
  for (const auto& q : qsam.quantizers()) {
    if (q->is_weight()) {
      // A weight's "output" is the weight itself.
      const at::Tensor* weight = named.find(q->weight_key());
      quality.quantizer_sqnr_db[q->name()] = weight ? sqnr_db(*weight, q->fake_quantize(*weight)) : 0.0;
    } else {
      quality.quantizer_sqnr_db[q->name()] = q->sqnr_db();
    }
  }
  return quality;
}

}  // namespace ptq4sam::quant
