// YOLOX parity with mmdetection 2.26 (the seed's detector path) on the yolox_tiny fixture, from
// both published checkpoint layouts, and the checkpoint readers' handling of those files.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "detect/random_weights.h"
#include "detect/yolox_detector.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "test_support.h"
#include "util/error.h"

namespace ptq4sam {
namespace {

nlohmann::json read_manifest(const std::string& dir) {
  std::ifstream in(dir + "/manifest.json");
  return nlohmann::json::parse(in);
}

// The manifest states each tolerance; the raw outputs' as "|a - b| <= F * max(1, |golden|)".
struct Tolerances {
  double raw_relative = 1e-3, boxes_px = 0.05, scores = 1e-4;
};

Tolerances read_tolerances(const nlohmann::json& manifest) {
  Tolerances t;
  const auto& tol = manifest.at("tolerances");
  t.boxes_px = tol.at("boxes_px").get<double>();
  t.scores = tol.at("scores").get<double>();
  std::smatch m;
  const std::string raw = tol.at("raw").get<std::string>();
  if (std::regex_search(raw, m, std::regex(R"(<=\s*([0-9.eE+-]+)\s*\*)"))) t.raw_relative = std::stod(m[1].str());
  return t;
}

struct YoloxFixture {
  std::string dir;
  io::StateDict golden;
  nlohmann::json manifest;
  Tolerances tolerances;
};

const YoloxFixture* yolox_fixture() {
  static const std::unique_ptr<YoloxFixture> fixture = [] {
    std::unique_ptr<YoloxFixture> f;
    const std::string root = test::fixtures_dir();
    if (root.empty() || !std::filesystem::exists(root + "/yolox_tiny/golden.pth")) return f;
    f = std::make_unique<YoloxFixture>();
    f->dir = root + "/yolox_tiny";
    f->golden = io::load_checkpoint(f->dir + "/golden.pth");
    f->manifest = read_manifest(f->dir);
    f->tolerances = read_tolerances(f->manifest);
    return f;
  }();
  return fixture.get();
}

#define REQUIRE_YOLOX_FIXTURE()                                                           \
  PTQ4SAM_REQUIRE_FIXTURES("yolox_tiny");                                                 \
  const YoloxFixture& f = *yolox_fixture();

detect::YoloxDetector load_yolox(const std::string& path) {
  return detect::YoloxDetector(detect::yolox_state_dict(io::load_checkpoint(path)), {});
}

std::vector<int64_t> as_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(YoloxCheckpoint, LegacyAndZipLayoutsHoldTheSameWeights) {
  REQUIRE_YOLOX_FIXTURE();
  const io::StateDict mmdet = io::load_checkpoint(f.dir + "/checkpoint_mmdet.pth");
  const io::StateDict megvii = io::load_checkpoint(f.dir + "/checkpoint_megvii.pth");
  const io::StateDict mmdet_model = mmdet.under("state_dict.");
  const auto& key_map = f.manifest.at("key_map");
  // The legacy file holds the EMA backups too, one per weight, before the weights.
  EXPECT_EQ(mmdet_model.size(), 2 * key_map.size());
  size_t compared = 0;
  for (const auto& row : key_map) {
    const std::string megvii_name = row[0].get<std::string>(), mmdet_name = row[1].get<std::string>();
    EXPECT_EQ(detect::megvii_to_mmdet_name(megvii_name), mmdet_name);
    const at::Tensor& a = mmdet_model.at(mmdet_name);
    const at::Tensor& b = megvii.at("model." + megvii_name);
    ASSERT_EQ(a.sizes(), b.sizes()) << mmdet_name;
    EXPECT_EQ(std::vector<int64_t>(a.sizes().begin(), a.sizes().end()), row[2].get<std::vector<int64_t>>()) << mmdet_name;
    EXPECT_TRUE(at::equal(a, b)) << mmdet_name;
    ++compared;
  }
  EXPECT_GT(compared, 0u);
  EXPECT_TRUE(detect::is_yolox(mmdet));
  EXPECT_TRUE(detect::is_yolox(megvii));
}

TEST(YoloxCheckpoint, ConfigInferredFromShapes) {
  REQUIRE_YOLOX_FIXTURE();
  const detect::YoloxDetector detector = load_yolox(f.dir + "/checkpoint_mmdet.pth");
  const auto& model = f.manifest.at("model");
  const detect::YoloxConfig& c = detector.model().config();
  EXPECT_EQ(c.stem_channels, model.at("backbone_stage_channels")[0].get<int64_t>());
  const auto blocks = model.at("backbone_blocks_per_stage").get<std::vector<int64_t>>();
  EXPECT_EQ(std::vector<int64_t>(c.stage_blocks.begin(), c.stage_blocks.end()), blocks);
  EXPECT_EQ(c.neck_blocks, model.at("neck_csp_blocks").get<int64_t>());
  EXPECT_EQ(c.head_channels, model.at("head_channels").get<int64_t>());
  EXPECT_EQ(c.num_classes, model.at("num_classes").get<int64_t>());
  EXPECT_NEAR(c.widen_factor(), model.at("width").get<double>(), 1e-9);
  std::printf("%s\n", c.describe().c_str());
}

TEST(YoloxCheckpoint, TruncatedLegacyFileIsAnErrorAtEveryCut) {
  REQUIRE_YOLOX_FIXTURE();
  const std::string bytes = test::read_bytes(f.dir + "/checkpoint_mmdet.pth");
  test::TempDir tmp;
  const std::string path = tmp.file("cut.pth");
  // Every cut in the header pickles, then cuts spread over the object pickle and the data.
  std::vector<size_t> cuts;
  for (size_t i = 0; i < 200; ++i) cuts.push_back(i);
  for (size_t i = 1; i < 150; ++i) cuts.push_back(bytes.size() * i / 150);
  cuts.push_back(bytes.size() - 1);
  for (const size_t cut : cuts) {
    test::write_bytes(path, bytes.substr(0, cut));
    try {
      io::load_checkpoint(path);
      ADD_FAILURE() << "a file cut at byte " << cut << " loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
}

TEST(YoloxCheckpoint, OtherFilesAreClearErrors) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny");
  test::TempDir tmp;
  test::write_bytes(tmp.file("junk.pth"), std::string("this is not a checkpoint at all, not zip, not legacy"));
  try {
    io::load_checkpoint(tmp.file("junk.pth"));
    ADD_FAILURE() << "junk loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a zip archive (nor a legacy torch.save file)"), std::string::npos) << e.what();
  }
  // A SAM checkpoint is a torch.save file but no YOLOX: the message lists what it lacks.
  try {
    detect::load_detector(fixtures + "/sam_tiny/checkpoint.pth");
    ADD_FAILURE() << "SAM loaded as a detector";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("not a YOLOX checkpoint"), std::string::npos) << what;
    EXPECT_NE(what.find("backbone.stem.conv.conv.weight"), std::string::npos) << what;
  }
}

TEST(YoloxParity, LetterboxedInputIsExact) {
  REQUIRE_YOLOX_FIXTURE();
  const detect::LetterboxedImage image = detect::yolox_letterbox(io::read_image_bgr(f.dir + "/image.jpg"));
  EXPECT_TRUE(at::equal(image.input, f.golden.at("input")));
  const at::Tensor scale = f.golden.at("scale_factor");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(image.scale_factor[size_t(i)], scale[i].item<float>()) << i;
  const auto img_shape = as_vector(f.golden.at("img_shape"));
  EXPECT_EQ(image.resized_height, img_shape[0]);
  EXPECT_EQ(image.resized_width, img_shape[1]);
}

// The golden's decisions sit at least 4x the float32 spread of faithful computations from their
// boundaries (manifest `margins`), so within the tolerances a port decides the same.
void expect_parity_from(const YoloxFixture& f, const std::string& checkpoint) {
  const detect::YoloxDetector detector = load_yolox(f.dir + "/" + checkpoint);
  const detect::LetterboxedImage image = detect::yolox_letterbox(io::read_image_bgr(f.dir + "/image.jpg"));
  const auto raw = detector.raw_outputs(image);
  const char* const names[] = {"raw_8", "raw_16", "raw_32"};
  for (size_t level = 0; level < 3; ++level) {
    const at::Tensor& expected = f.golden.at(names[level]);
    ASSERT_EQ(raw[level].sizes(), expected.sizes()) << names[level];
    const at::Tensor excess = (raw[level] - expected).abs() - f.tolerances.raw_relative * expected.abs().clamp_min(1.0);
    const double worst = ((raw[level] - expected).abs() / expected.abs().clamp_min(1.0)).max().item<double>();
    std::printf("%s %s: max |diff| / max(1, |golden|) %.3g\n", checkpoint.c_str(), names[level], worst);
    EXPECT_LE(excess.max().item<double>(), 0.0) << names[level];
  }

  detect::YoloxCandidates candidates;
  const std::vector<detect::Detection> dets = detector.postprocess(raw, image.scale_factor, &candidates);
  EXPECT_EQ(candidates.prior_index, as_vector(f.golden.at("pre_nms_index")));
  EXPECT_EQ(candidates.labels, as_vector(f.golden.at("pre_nms_labels")));
  const at::Tensor pre_boxes = f.golden.at("pre_nms_boxes"), pre_scores = f.golden.at("pre_nms_scores");
  if (candidates.boxes.size() == size_t(pre_boxes.size(0))) {
    double box_diff = 0, score_diff = 0;
    for (size_t i = 0; i < candidates.boxes.size(); ++i) {
      const auto& b = candidates.boxes[i];
      const float got[4] = {b.x0, b.y0, b.x1, b.y1};
      for (int k = 0; k < 4; ++k) box_diff = std::max(box_diff, double(std::abs(got[k] - pre_boxes[int64_t(i)][k].item<float>())));
      score_diff = std::max(score_diff, double(std::abs(candidates.scores[i] - pre_scores[int64_t(i)].item<float>())));
    }
    std::printf("%s candidates: box max |diff| %.3g px, score %.3g\n", checkpoint.c_str(), box_diff, score_diff);
    EXPECT_LE(box_diff, f.tolerances.boxes_px);
    EXPECT_LE(score_diff, f.tolerances.scores);
  }

  // Detections: the same kept priors and labels; each paired with the golden one of its label
  // and nearest box (neighbouring scores may be closer than the score tolerance).
  const at::Tensor det_boxes = f.golden.at("det_boxes"), det_scores = f.golden.at("det_scores");
  const std::vector<int64_t> det_labels = as_vector(f.golden.at("det_labels"));
  const std::vector<int64_t> det_keep = as_vector(f.golden.at("det_keep"));
  ASSERT_EQ(dets.size(), det_labels.size());
  std::set<std::pair<int64_t, int64_t>> expected_kept, got_kept;
  for (size_t i = 0; i < det_keep.size(); ++i)
    expected_kept.insert({f.golden.at("pre_nms_index")[det_keep[i]].item<int64_t>(), det_labels[i]});
  for (const auto& d : dets) {
    for (size_t c = 0; c < candidates.boxes.size(); ++c) {
      const auto& b = candidates.boxes[c];
      if (b.x0 == d.box.x0 && b.y0 == d.box.y0 && b.x1 == d.box.x1 && b.y1 == d.box.y1 && candidates.labels[c] == d.label)
        got_kept.insert({candidates.prior_index[c], d.label});
    }
  }
  EXPECT_EQ(got_kept, expected_kept);
  double box_diff = 0, score_diff = 0;
  for (const auto& d : dets) {
    double best = 1e30;
    int64_t best_j = -1;
    for (size_t j = 0; j < det_labels.size(); ++j) {
      if (det_labels[j] != d.label) continue;
      const float got[4] = {d.box.x0, d.box.y0, d.box.x1, d.box.y1};
      double dist = 0;
      for (int k = 0; k < 4; ++k) dist = std::max(dist, double(std::abs(got[k] - det_boxes[int64_t(j)][k].item<float>())));
      if (dist < best) {
        best = dist;
        best_j = int64_t(j);
      }
    }
    ASSERT_GE(best_j, 0) << "a detection of label " << d.label << " the golden lacks";
    box_diff = std::max(box_diff, best);
    score_diff = std::max(score_diff, double(std::abs(d.score - det_scores[best_j].item<float>())));
  }
  std::printf("%s detections: %zu, box max |diff| %.3g px, score %.3g\n", checkpoint.c_str(), dets.size(), box_diff,
              score_diff);
  EXPECT_LE(box_diff, f.tolerances.boxes_px);
  EXPECT_LE(score_diff, f.tolerances.scores);
  // Output order: descending score.
  for (size_t i = 1; i < dets.size(); ++i) EXPECT_GE(dets[i - 1].score, dets[i].score);

  // The seed's DetectorWrapper reorders by class before prompting SAM.
  const std::vector<detect::Detection> by_class = detect::order_by_class(dets);
  const std::vector<int64_t> order = as_vector(f.golden.at("det_order_by_class"));
  ASSERT_EQ(by_class.size(), order.size());
  for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(by_class[i].label, det_labels[size_t(order[i])]) << i;
}

TEST(YoloxParity, FromMmdetectionLegacyCheckpoint) {
  REQUIRE_YOLOX_FIXTURE();
  expect_parity_from(f, "checkpoint_mmdet.pth");
}

TEST(YoloxParity, FromMegviiCheckpoint) {
  REQUIRE_YOLOX_FIXTURE();
  expect_parity_from(f, "checkpoint_megvii.pth");
}

TEST(Nms, SuppressesOnlyAboveTheThresholdAndWithinAClass) {
  // Two boxes with IoU exactly 0.5: kept at threshold 0.5 (strictly greater suppresses).
  const std::vector<detect::Box> boxes = {{0, 0, 10, 10}, {0, 0, 10, 5}, {100, 100, 110, 110}, {0, 0, 10, 9}};
  const std::vector<float> scores = {0.9f, 0.8f, 0.7f, 0.6f};
  EXPECT_EQ(detect::nms(boxes, scores, 0.5f), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(detect::nms(boxes, scores, 0.49f), (std::vector<int64_t>{0, 2}));
  // Box 3 overlaps box 0 at 0.9, but in another class it stays.
  EXPECT_EQ(detect::batched_nms(boxes, scores, {0, 0, 0, 1}, 0.65f), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(detect::batched_nms(boxes, scores, {0, 0, 0, 0}, 0.65f), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(detect::batched_nms({}, {}, {}, 0.65f).empty());
}

}  // namespace
}  // namespace ptq4sam

namespace ptq4sam {
namespace {

// Sizes other than the fixture's load alike: depth, width and classes come from the shapes.
TEST(YoloxCheckpoint, RandomYoloxSLoadsWithItsSizeInferred) {
  test::TempDir tmp;
  io::save_checkpoint(tmp.file("yolox_s.pth"), detect::random_yolox_state_dict(0.33, 0.5, 80, 3), false);
  const auto detector = detect::load_detector(tmp.file("yolox_s.pth"));
  EXPECT_EQ(detector->describe(), "YOLOX-s (depth 0.33, width 0.5, 80 classes)");
  const auto& yolox = dynamic_cast<const detect::YoloxDetector&>(*detector).model().config();
  EXPECT_EQ(yolox.stage_blocks, (std::array<int64_t, 4>{1, 3, 3, 1}));
  EXPECT_EQ(yolox.neck_blocks, 1);
  EXPECT_EQ(yolox.head_channels, 128);
  at::manual_seed(0);
  const at::Tensor image = at::randint(0, 256, {200, 300, 3}, at::kByte);
  const auto dets = detector->detect(image);
  for (const auto& d : dets) {
    EXPECT_GE(d.score, 0.05f);
    EXPECT_LT(d.label, 80);
  }
}

}  // namespace
}  // namespace ptq4sam
