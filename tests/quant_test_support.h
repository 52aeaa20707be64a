#pragma once
// Helpers shared by the quantization tests: small configs and the fixture's calibration samples.
#include <string>

#include "io/image.h"
#include "quant/calibrate.h"
#include "quant/qconfig.h"

namespace ptq4sam::test {

// Activations by average min/max, weights per channel by min/max (the grid-search observers
// are tested against the seed elsewhere and are slow on an encoder).
inline std::string config_yaml(int bit, bool big, bool agq, const std::string& w_observer = "MinMaxObserver") {
  return "a_qconfig: {quantizer: LSQFakeQuantize, observer: AvgMinMaxObserver, bit: " + std::to_string(bit) +
         ", symmetric: False, ch_axis: -1}\n"
         "w_qconfig: {quantizer: AdaRoundFakeQuantize, observer: " + w_observer + ", bit: " + std::to_string(bit) +
         ", symmetric: False, ch_axis: 0}\n"
         "calibrate: 2\n"
         "ptq4sam: {BIG: " + std::string(big ? "True" : "False") + ", AGQ: " + (agq ? "True" : "False") +
         ", global_num: 128, peak_distance: 32, peak_height: 0.01}\n";
}

inline quant::QuantConfig config_of(int bit, bool big, bool agq) {
  return quant::parse_quant_config(config_yaml(bit, big, agq), "test config");
}

// The fixture image with a few boxes; the second sample is the image mirrored.
inline quant::SampleSource fixture_samples(const std::string& fixtures) {
  const at::Tensor image = io::read_image_rgb(fixtures + "/sam_tiny/image.jpg");
  return [image](size_t i) {
    quant::CalibrationSample s;
    s.name = "sample" + std::to_string(i);
    s.image = i % 2 ? image.flip(1).contiguous() : image;
    s.boxes = {{100, 80, 420, 400}, {300, 150, 760, 500}};
    return s;
  };
}

}  // namespace ptq4sam::test
