// `ptq4sam quantize` end to end on a small random model and synthetic scenes, the artifact run
// by `segment`, and the bad inputs it must refuse with one clear line.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_support.h"

namespace ptq4sam {
namespace {

class QuantizeCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>();
    test::write_small_model(file("model.pth"), 5);
    const auto r = test::run_cli("synth-coco --images 2 --out " + file("synth"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // Fast observers; BIG and AGQ are tested in quantize_test.
    test::write_bytes(file("fast.yaml"),
                      "a_qconfig: {quantizer: LSQFakeQuantize, observer: AvgMinMaxObserver, bit: 8, symmetric: False, ch_axis: -1}\n"
                      "w_qconfig: {quantizer: FixedFakeQuantize, observer: MinMaxObserver, bit: 4, symmetric: False, ch_axis: 0}\n"
                      "calibrate: 2\n"
                      "ptq4sam: {BIG: False, AGQ: False}\n");
  }
  static void TearDownTestSuite() { dir_.reset(); }
  static std::string file(const std::string& name) { return dir_->file(name); }
  static std::string calib_args(const std::string& images) {
    return "--model " + file("model.pth") + " --calib-images " + images + " --calib-annotations " +
           file("synth/instances.json");
  }
  static void expect_error(const std::string& args, const std::string& expected) {
    const test::CommandResult r = test::run_cli("quantize " + args);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("ptq4sam: error: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
  }
  static std::unique_ptr<test::TempDir> dir_;
};
std::unique_ptr<test::TempDir> QuantizeCli::dir_;

TEST_F(QuantizeCli, QuantizesReportsAndTheArtifactSegments) {
  const std::string out = file("w4a8.safetensors"), report = file("report.json");
  const auto r = test::run_cli("quantize " + calib_args(file("synth/images")) + " --config " + file("fast.yaml") +
                               " --calib-prompts " + file("synth/detections.json") + " --out " + out + " --report " + report);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(test::read_bytes(report));
  EXPECT_EQ(j["calibration_images"], 2);
  EXPECT_EQ(j["quantizers"].size(), 7u * 12u + 2u * 4u);
  for (const auto& q : j["quantizers"]) {
    ASSERT_TRUE(q.contains("sqnr_db")) << q.dump();
    if (q["sqnr_db"].is_number()) {
      EXPECT_GT(q["sqnr_db"].get<double>(), 0.0) << q.dump();
    }
  }
  EXPECT_TRUE(j["blocks"].contains("mask_decoder.transformer.layers.0"));
  EXPECT_LT(j["artifact_bytes"].get<double>(), j["checkpoint_bytes"].get<double>());

  const auto seg = test::run_cli("segment --model " + out + " --image " + file("synth/images/synth_00001.png") +
                                 " --box 10,10,60,60 --out " + file("seg"));
  EXPECT_EQ(seg.exit_code, 0) << seg.output;
  EXPECT_NE(seg.output.find("quantized artifact: W4A8"), std::string::npos) << seg.output;
  EXPECT_NE(seg.output.find("integer runtime, 32 layers and 0 attentions on u8 x s8 codes"), std::string::npos)
      << seg.output;  // the encoder is not quantized here
  const auto simulated = test::run_cli("segment --backend simulated --model " + out + " --image " +
                                       file("synth/images/synth_00001.png") + " --box 10,10,60,60 --out " + file("seg_sim"));
  EXPECT_EQ(simulated.exit_code, 0) << simulated.output;
  EXPECT_NE(simulated.output.find("simulated (fake-quant)"), std::string::npos) << simulated.output;
  const auto bad = test::run_cli("segment --backend fpga --model " + out + " --image x.png --box 1,1,2,2 --out " + file("x"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--backend"), std::string::npos) << bad.output;

  // One row per model, each measured in its own process, in two rounds taking turns.
  const auto bench =
      test::run_cli("bench --runs 1 --rounds 2 --threads 1 --model " + file("model.pth") + " --model " + out);
  ASSERT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_NE(bench.output.find("bench: round 2/2"), std::string::npos) << bench.output;
  EXPECT_NE(bench.output.find("bench: FP32 warm-up 1/1"), std::string::npos) << bench.output;
  EXPECT_NE(bench.output.find("embed min"), std::string::npos) << bench.output;
  EXPECT_NE(bench.output.find("embed RSS"), std::string::npos) << bench.output;
  EXPECT_NE(bench.output.find("FP32"), std::string::npos) << bench.output;
  EXPECT_NE(bench.output.find("W4A8 integer"), std::string::npos) << bench.output;
  const auto no_runs = test::run_cli("bench --runs 0 --model " + out);
  EXPECT_EQ(no_runs.exit_code, 1);
  EXPECT_NE(no_runs.output.find("ptq4sam: error: --runs 0: must be at least 1"), std::string::npos) << no_runs.output;
  const auto no_rounds = test::run_cli("bench --rounds 0 --model " + out);
  EXPECT_EQ(no_rounds.exit_code, 1);
  EXPECT_NE(no_rounds.output.find("ptq4sam: error: --rounds 0: must be at least 1"), std::string::npos)
      << no_rounds.output;
  const auto negative_warmup = test::run_cli("bench --warmup=-1 --model " + out);
  EXPECT_EQ(negative_warmup.exit_code, 1);
  EXPECT_NE(negative_warmup.output.find("ptq4sam: error: --warmup -1: must be at least 0"), std::string::npos)
      << negative_warmup.output;
}

// Detections alone: the images are the folder's files, numbered by their names.
TEST_F(QuantizeCli, DetectionsAloneNameTheImages) {
  const std::string out = file("prompts_only.safetensors");
  const auto r = test::run_cli("quantize --model " + file("model.pth") + " --calib-images " + file("synth/images") +
                               " --calib-prompts " + file("synth/detections.json") + " --config " + file("fast.yaml") +
                               " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 calibration images"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(out));
  expect_error("--model " + file("model.pth") + " --calib-images " + file("synth/images") + " --config " +
                   file("fast.yaml") + " --out " + file("none.safetensors"),
               "needs --calib-annotations");
}

// A config with `recon` reconstructs every block (PTQ4SAM-L) and reports each one; --no-recon
// skips it; a CUDA request on this CPU build is one clear error.
TEST_F(QuantizeCli, ReconstructsWithAReconConfig) {
  test::write_bytes(file("recon.yaml"), test::read_bytes(file("fast.yaml")) +
                                            "recon: {batch_size: 1, scale_lr: 4.0e-5, warm_up: 0.2, weight: 0.01, iters: 500, "
                                            "b_range: [20, 2], keep_gpu: False, round_mode: learned_hard_sigmoid, drop_prob: 0.5}\n");
  const std::string out = file("recon.safetensors"), report = file("recon.json");
  const std::string args = calib_args(file("synth/images")) + " --config " + file("recon.yaml") + " --quant-encoder --out " + out;
  const auto r = test::run_cli("quantize " + args + " --recon-iters 4 --seed 3 --report " + report);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("reconstruction: 4 iterations per block"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out + ".recon.safetensors"));  // done: the artifact holds it all
  const auto j = nlohmann::json::parse(test::read_bytes(report));
  ASSERT_TRUE(j.contains("reconstruction")) << j.dump();
  ASSERT_TRUE(j.contains("before_reconstruction")) << j.dump();
  EXPECT_TRUE(j["before_reconstruction"]["mask_logits_sqnr_db"].is_number()) << j.dump();
  // 2 encoder blocks (attention, MLP), the neck, 2 decoder layers of 4 blocks, the final attention.
  ASSERT_EQ(j["reconstruction"].size(), 2u * 2u + 1u + 2u * 4u + 1u);
  EXPECT_EQ(j["reconstruction"][0]["block"], "image_encoder.blocks.0.attn");
  for (const auto& b : j["reconstruction"]) {
    EXPECT_GT(b["mse_before"].get<double>(), 0.0) << b.dump();
    EXPECT_GE(b["mse_after"].get<double>(), 0.0) << b.dump();
    EXPECT_GT(b["seconds"].get<double>(), 0.0) << b.dump();
  }

  const auto skipped = test::run_cli("quantize " + args + " --no-recon --report " + report);
  ASSERT_EQ(skipped.exit_code, 0) << skipped.output;
  EXPECT_FALSE(nlohmann::json::parse(test::read_bytes(report)).contains("reconstruction"));
  expect_error(args + " --device cuda", "--device cuda: this LibTorch build has no CUDA support");
}

TEST_F(QuantizeCli, EmptyCalibrationFolder) {
  std::filesystem::create_directories(file("empty"));
  expect_error(calib_args(file("empty")) + " --config " + file("fast.yaml") + " --out " + file("x.safetensors"),
               "holds none of the 2 images");
}

TEST_F(QuantizeCli, FewerImagesThanCalibCount) {
  expect_error(calib_args(file("synth/images")) + " --config " + file("fast.yaml") + " --calib-count 5 --out " +
                   file("x.safetensors"),
               "has 2 calibration images with prompts (2 images found, 0 without prompts), fewer than --calib-count 5");
}

TEST_F(QuantizeCli, ConfigWithAnUnknownKey) {
  test::write_bytes(file("bad.yaml"), "a_qconfig: {bit: 4, colour: red}\n");
  expect_error(calib_args(file("synth/images")) + " --config " + file("bad.yaml") + " --out " + file("x.safetensors"),
               "bad.yaml: key 'a_qconfig.colour' is not a known key");
}

TEST_F(QuantizeCli, SegmentRefusesACorruptArtifact) {
  test::write_bytes(file("corrupt.safetensors"), std::string("\x10\0\0\0\0\0\0\0{\"a\": 1}", 16));
  const auto r = test::run_cli("segment --model " + file("corrupt.safetensors") + " --image " +
                               file("synth/images/synth_00001.png") + " --box 10,10,60,60 --out " + file("seg2"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("corrupt.safetensors"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ptq4sam

namespace ptq4sam {
namespace {

// The seed's calibration set: the annotation file's images as listed (not by file name), after
// mmdetection's training-set filter: an image without annotations and one whose shorter side
// is below 32 are dropped.
TEST_F(QuantizeCli, CalibratesInTheAnnotationOrderAfterMmdetectionsTrainingFilter) {
  using nlohmann::json;
  const json gt = json::parse(test::read_bytes(file("synth/instances.json")));
  ASSERT_GE(gt["images"].size(), 2u);
  json images = json::array();
  json unannotated = gt["images"][0];
  unannotated["id"] = 90;
  json tiny = gt["images"][1];
  tiny["id"] = 91;
  tiny["width"] = 20;
  tiny["height"] = 31;
  images.push_back(unannotated);
  images.push_back(tiny);
  images.push_back(gt["images"][1]);
  images.push_back(gt["images"][0]);
  json annotations = gt["annotations"];
  annotations.push_back({{"id", 9001}, {"image_id", 91}, {"category_id", gt["categories"][0]["id"]}, {"iscrowd", 0},
                         {"area", 25.0}, {"bbox", {2, 2, 5, 5}}, {"segmentation", {{2, 2, 7, 2, 7, 7, 2, 7}}}});
  json reordered = gt;
  reordered["images"] = images;
  reordered["annotations"] = annotations;
  test::write_bytes(file("reordered.json"), reordered.dump());
  const std::string report = file("order_report.json");
  const auto r = test::run_cli("quantize --model " + file("model.pth") + " --calib-images " + file("synth/images") +
                               " --calib-annotations " + file("reordered.json") + " --config " + file("fast.yaml") +
                               " --out " + file("order.safetensors") + " --report " + report + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(test::read_bytes(report));
  EXPECT_EQ(j["calibration_files"], json({gt["images"][1]["file_name"], gt["images"][0]["file_name"]}));
}

}  // namespace
}  // namespace ptq4sam
