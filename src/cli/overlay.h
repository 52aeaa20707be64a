#pragma once
// Pictures for people: masks tinted over the image, prompts drawn on top.
#include <ATen/ATen.h>

#include <vector>

#include "coco/rle.h"
#include "sam/predictor.h"

namespace ptq4sam::cli {

// image: H x W x 3 RGB uint8; masks: (N, H, W) bool. Returns a new RGB image. `captions`, when
// given, label the prompts' boxes (one per prompt, e.g. "dog 0.87").
at::Tensor draw_overlay(const at::Tensor& image, const at::Tensor& masks, const std::vector<sam::Prompt>& prompts,
                        const std::vector<std::string>& captions = {});

// Many masks of the image's size, decoded one at a time, each tinted with its own colour
// (segment everything's picture); drawn largest first, so that small ones stay visible.
at::Tensor draw_mask_overlay(const at::Tensor& image, const std::vector<const coco::Rle*>& masks);

}  // namespace ptq4sam::cli
