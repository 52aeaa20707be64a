#include "detect/faster_rcnn.h"

#include <cmath>
#include <cstdio>

#include "detect/keep_ratio_resize.h"
#include "kernels/roi_align.h"
#include "util/error.h"

namespace ptq4sam::detect {
namespace {

// The RoI size of the seed's bbox_roi_extractor (RoIAlign output 7).
constexpr int64_t kRoiSize = 7;
// The FPN levels the RoIs are pooled from: P2..P5 (P6 only feeds the RPN).
constexpr int64_t kRoiLevels = 4;

const std::vector<std::string>& required_keys() {
  static const std::vector<std::string> keys = {
      "backbone.conv1.weight",           "backbone.bn1.running_var",        "backbone.layer1.0.conv1.weight",
      "backbone.layer4.0.downsample.0.weight", "neck.lateral_convs.0.conv.weight", "neck.fpn_convs.3.conv.weight",
      "rpn_head.rpn_conv.weight",        "rpn_head.rpn_cls.weight",         "rpn_head.rpn_reg.weight",
      "roi_head.bbox_head.shared_fcs.0.weight", "roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_reg.weight"};
  return keys;
}

std::vector<std::string> missing_in(const io::StateDict& state) {
  std::vector<std::string> missing;
  for (const auto& key : required_keys())
    if (!state.contains(key)) missing.push_back(key);
  return missing;
}

// The entries of the model: under "state_dict." (mmdetection's files) or at the top.
io::StateDict model_entries(const io::StateDict& checkpoint) {
  io::StateDict inner = checkpoint.under("state_dict.");
  return inner.contains("backbone.conv1.weight") ? inner : checkpoint;
}

}  // namespace

std::string FasterRcnnConfig::describe() const {
  const char* depth = blocks == std::array<int64_t, 4>{3, 4, 6, 3}    ? "R50"
                      : blocks == std::array<int64_t, 4>{3, 4, 23, 3} ? "R101"
                                                                        : "ResNet";
  char buf[160];
  std::snprintf(buf, sizeof buf, "Faster R-CNN %s-FPN (base %lld, FPN %lld, fc %lld, %lld classes)", depth,
                static_cast<long long>(base_channels), static_cast<long long>(fpn_channels),
                static_cast<long long>(fc_channels), static_cast<long long>(num_classes));
  return buf;
}

float faster_rcnn_normalized(int64_t channel, uint8_t value) {
  static const float mean[3] = {123.675f, 116.28f, 103.53f}, std[3] = {58.395f, 57.12f, 57.375f};
  // cv2.subtract in float32, then cv2.multiply by the float64 scalar 1 / std, stored as float32.
  const float centred = float(value) - mean[channel];
  return float(double(centred) * (1.0 / double(std[channel])));
}

FasterRcnnInput faster_rcnn_preprocess(const at::Tensor& bgr) {
  KeepRatioResized resized = keep_ratio_resize(bgr, 1333, 800, "Faster R-CNN");
  float lut[3][256];
  for (int64_t c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) lut[c][v] = faster_rcnn_normalized(c, uint8_t(v));
  const int64_t h = resized.bgr.size(0), w = resized.bgr.size(1);
  // Written as (1, H, W, 3) and viewed as NCHW: channels-last, the layout the convolutions take.
  at::Tensor nhwc = at::empty({1, h, w, 3}, at::kFloat);
  const uint8_t* src = resized.bgr.data_ptr<uint8_t>();
  float* dst = nhwc.data_ptr<float>();
  for (int64_t i = 0; i < h * w; ++i)
    for (int64_t c = 0; c < 3; ++c) dst[i * 3 + c] = lut[c][src[i * 3 + (2 - c)]];
  return {std::move(resized.bgr), nhwc.permute({0, 3, 1, 2}), resized.scale_factor};
}

int64_t roi_level(const Box& roi) {
  const float scale = std::sqrt((roi.y1 - roi.y0) * (roi.x1 - roi.x0));
  const float level = std::floor(std::log2(scale / 56.0f + 1e-6f));
  return std::isnan(level) ? 0 : int64_t(std::min(std::max(level, 0.0f), float(kRoiLevels - 1)));
}

FasterRcnn::FasterRcnn(io::StateDict& state)
    : backbone_(state, "backbone"),
      neck_(state, "neck"),
      rpn_head_(state, "rpn_head", neck_.out_channels()),
      bbox_head_(state, "roi_head.bbox_head", neck_.out_channels(), kRoiSize) {
  if (neck_.in_channels() != backbone_.out_channels())
    throw Error(state.source(), "the FPN's lateral convolutions do not take the ResNet's C2..C5 widths");
  config_ = {backbone_.base_channels(), backbone_.blocks(), neck_.out_channels(), bbox_head_.fc_channels(),
             bbox_head_.num_classes()};
}

std::vector<Detection> FasterRcnn::detect(const at::Tensor& bgr, const RpnOptions& rpn, const RcnnOptions& rcnn,
                                          FasterRcnnTrace* trace) const {
  FasterRcnnInput input = faster_rcnn_preprocess(bgr);
  const int64_t height = input.input.size(2), width = input.input.size(3);
  std::array<at::Tensor, 4> c = backbone_.forward(input.input);
  const std::array<at::Tensor, 5> p = neck_.forward(c);
  const RPNHead::Outputs rpn_out = rpn_head_.forward(p);
  RpnCandidates rpn_candidates;
  const Proposals proposals = rpn_head_.proposals(rpn_out, height, width, rpn, trace ? &rpn_candidates : nullptr);

  // Each RoI pooled from its level, into its row of one (R, 7, 7, C) tensor.
  const int64_t n = int64_t(proposals.boxes.size());
  std::vector<int64_t> pooled_level(static_cast<size_t>(n));
  std::array<std::vector<std::array<float, 4>>, kRoiLevels> level_rois;
  std::array<std::vector<int64_t>, kRoiLevels> level_rows;
  for (int64_t i = 0; i < n; ++i) {
    const Box& b = proposals.boxes[size_t(i)];
    pooled_level[size_t(i)] = roi_level(b);
    level_rois[size_t(pooled_level[size_t(i)])].push_back({b.x0, b.y0, b.x1, b.y1});
    level_rows[size_t(pooled_level[size_t(i)])].push_back(i);
  }
  at::Tensor roi_feats = at::empty({n, kRoiSize, kRoiSize, neck_.out_channels()}, at::kFloat);
  for (size_t level = 0; level < size_t(kRoiLevels); ++level) {
    if (level_rois[level].empty()) continue;
    const at::Tensor pooled = kernels::roi_align(p[level], level_rois[level], 1.0f / float(kFpnStrides[level]), kRoiSize);
    roi_feats.index_copy_(0, at::tensor(level_rows[level], at::kLong), pooled);
  }
  BBoxHead::Outputs head = bbox_head_.forward(roi_feats);
  RcnnCandidates rcnn_candidates;
  std::vector<Detection> dets = bbox_head_.detections(proposals.boxes, head, height, width, input.scale_factor, rcnn,
                                                      trace ? &rcnn_candidates : nullptr);
  if (trace) {
    trace->input = std::move(input);
    trace->backbone = std::move(c);
    trace->fpn = p;
    trace->rpn = rpn_out;
    trace->rpn_candidates = std::move(rpn_candidates);
    trace->proposals = proposals;
    trace->roi_level = std::move(pooled_level);
    trace->roi_feats = std::move(roi_feats);
    trace->head = std::move(head);
    trace->rcnn_candidates = std::move(rcnn_candidates);
  }
  return dets;
}

FasterRcnnDetector::FasterRcnnDetector(io::StateDict state, const DetectorOptions& options)
    : weight_bytes_(float_tensor_bytes(state)), model_(state) {
  rcnn_.score_threshold = options.score_threshold.value_or(rcnn_.score_threshold);
  rcnn_.nms_iou = options.nms_iou.value_or(rcnn_.nms_iou);
  classes_ = class_names(model_.config().num_classes);
}

std::vector<std::string> faster_rcnn_missing_keys(const io::StateDict& checkpoint) {
  return missing_in(model_entries(checkpoint));
}

bool is_faster_rcnn(const io::StateDict& checkpoint) { return faster_rcnn_missing_keys(checkpoint).empty(); }

io::StateDict faster_rcnn_state_dict(const io::StateDict& checkpoint) {
  io::StateDict entries = model_entries(checkpoint);
  const std::vector<std::string> missing = missing_in(entries);
  if (!missing.empty()) {
    std::string list;
    for (const auto& key : missing) list += (list.empty() ? "" : ", ") + key;
    throw Error(checkpoint.source(), "not a Faster R-CNN checkpoint (mmdetection layout): missing " + list);
  }
  entries.set_source(checkpoint.source());
  return entries;
}

}  // namespace ptq4sam::detect
