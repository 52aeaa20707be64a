#pragma once
// Pictures for people: masks tinted over the image, prompts drawn on top.
#include <ATen/ATen.h>

#include <vector>

#include "sam/predictor.h"

namespace ptq4sam::cli {

// image: H x W x 3 RGB uint8; masks: (N, H, W) bool. Returns a new RGB image. `captions`, when
// given, label the prompts' boxes (one per prompt, e.g. "dog 0.87").
at::Tensor draw_overlay(const at::Tensor& image, const at::Tensor& masks, const std::vector<sam::Prompt>& prompts,
                        const std::vector<std::string>& captions = {});

}  // namespace ptq4sam::cli
