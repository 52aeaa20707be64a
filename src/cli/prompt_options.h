#pragma once
// The text forms of `segment`'s prompt options, parsed and checked against the image: what a
// user types (`--point 400,290,1`, `--box 50,40,400,300`) becomes a prompt or a one-line error
// naming the option and its text.
#include <cstdint>
#include <string>

#include "sam/predictor.h"

namespace ptq4sam::cli {

// "X,Y,LABEL" in image pixels, LABEL 1 (foreground) or 0 (background); the point must lie in
// the width x height image. Throws ptq4sam::Error naming `--point '<text>'` otherwise.
sam::Point parse_point_option(const std::string& text, int64_t width, int64_t height);

// "X0,Y0,X1,Y1" in image pixels, clipped to the image (sam::clip_box); a box entirely outside
// it, reversed or non-finite throws ptq4sam::Error naming `--box '<text>'`.
sam::Box parse_box_option(const std::string& text, int64_t width, int64_t height);

}  // namespace ptq4sam::cli
