#pragma once
// The seed's YAML quantization config (exp/config*.yaml): a_qconfig / w_qconfig (quantizer,
// observer, bit, symmetric, ch_axis), calibrate, recon, ptq4sam (BIG, AGQ, global_num,
// peak_distance, peak_height). Unknown keys and impossible values are errors naming the key.
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "quant/bimodal.h"
#include "quant/observer.h"

namespace ptq4sam::quant {

struct QConfig {
  std::string quantizer = "LSQFakeQuantize";
  std::string observer = "AvgMinMaxObserver";
  int bit = 8;
  bool symmetric = false;
  int ch_axis = -1;
  QuantRange range() const { return {bit, symmetric}; }
};

// QDrop reconstruction settings (used by the reconstruction step; kept and validated here).
struct ReconConfig {
  int batch_size = 1;
  double scale_lr = 4.0e-5;
  double warm_up = 0.2;
  double weight = 0.01;
  int iters = 20000;
  std::pair<double, double> b_range{20, 2};
  bool keep_gpu = true;
  std::string round_mode = "learned_hard_sigmoid";
  double drop_prob = 0.5;
};

struct Ptq4samConfig {
  bool big = true;
  bool agq = true;
  BimodalConfig bimodal;
};

struct QuantConfig {
  QConfig a{"LSQFakeQuantize", "AvgMinMaxObserver", 8, false, -1};
  QConfig w{"FixedFakeQuantize", "MSEObserver", 8, false, 0};
  int calibrate = 32;
  std::optional<ReconConfig> recon;
  Ptq4samConfig ptq4sam;
  std::string source;  // the YAML text it was read from
};

// Parses YAML text; `where` names the file in errors ("where: key 'x': problem").
QuantConfig parse_quant_config(const std::string& yaml_text, const std::string& where);
QuantConfig load_quant_config(const std::string& path);

// A new observer for one quantizer of this config (per channel along ch_axis when >= 0).
std::unique_ptr<Observer> make_observer(const QConfig& config);

}  // namespace ptq4sam::quant
