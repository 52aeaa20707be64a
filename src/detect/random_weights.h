#pragma once
// Random detector weights in mmdetection's names (YOLOX of any size, Faster R-CNN R50-FPN of
// any width), for benches and tests: no published checkpoint is needed to measure a network of
// the published size.
#include <cstdint>

#include "io/checkpoint.h"

namespace ptq4sam::detect {

// mmdetection's YOLOX at (deepen, widen): YOLOX-s 0.33 / 0.5, -m 0.67 / 0.75, -L 1.0 / 1.0,
// -x 1.33 / 1.25; every tensor of the model (convolutions N(0, 2 / fan_in), batch norms near
// the identity, objectness biases of -6 so that a few boxes pass the score threshold), in
// module order. Deterministic for a seed.
io::StateDict random_yolox_state_dict(double deepen, double widen, int64_t num_classes, uint64_t seed);

// mmdetection's Faster R-CNN with a ResNet-50 of `base` channels (64 for the published one),
// an FPN of `fpn` channels (256), box-head FCs of `fc` (1024); every tensor in module order.
// Deterministic for a seed.
io::StateDict random_faster_rcnn_state_dict(int64_t base, int64_t fpn, int64_t fc, int64_t num_classes, uint64_t seed);

}  // namespace ptq4sam::detect
