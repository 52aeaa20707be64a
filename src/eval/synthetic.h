#pragma once
// Synthetic COCO-style scenes for running `eval` end to end without a download: coloured
// rectangles, ellipses and triangles on textured backgrounds, with polygon annotations and a
// detections file of jittered boxes, wrong classes and false positives.
#include <cstdint>
#include <string>

namespace ptq4sam::eval {

struct SyntheticOptions {
  int images = 8;
  int min_side = 320, max_side = 640;
  uint64_t seed = 0;
};

// Writes DIR/images/*.png, DIR/instances.json and DIR/detections.json (deterministic for a
// seed). Returns a one-line description.
std::string write_synthetic_coco(const std::string& dir, const SyntheticOptions& options);

}  // namespace ptq4sam::eval
