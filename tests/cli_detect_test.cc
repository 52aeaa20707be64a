// The seed's pipeline from the command line: `detect`, `eval --detector` with the seed's
// protocol (maxDets 100/300/1000, the placeholder box), `quantize --calib-detector`, `bench
// --detector`, and the errors a wrong detector file gets.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "eval/synthetic.h"
#include "io/checkpoint.h"
#include "test_support.h"

namespace ptq4sam {
namespace {

using nlohmann::json;

json read_json(const std::string& path) { return json::parse(test::read_bytes(path)); }

class DetectCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string fixtures = test::fixtures_dir();
    if (fixtures.empty() || !std::filesystem::exists(fixtures + "/yolox_tiny/checkpoint_mmdet.pth")) return;
    detector_ = fixtures + "/yolox_tiny/checkpoint_mmdet.pth";
    photo_ = fixtures + "/yolox_tiny/image.jpg";
    dir_ = std::make_unique<test::TempDir>();
    test::write_small_model(file("model.pth"), 5);
    eval::SyntheticOptions options;
    options.images = 3;
    options.min_side = 96;
    options.max_side = 160;
    eval::write_synthetic_coco(file("data"), options);
    // The fixture's photo under a COCO-style numbered name, with a one-image annotation file.
    std::filesystem::create_directories(file("photo"));
    std::filesystem::copy_file(photo_, file("photo/000000000007.jpg"));
    test::write_bytes(file("photo.json"), json{{"images", {{{"id", 7}, {"file_name", "000000000007.jpg"}, {"height", 534}, {"width", 800}}}},
                                               {"categories", {{{"id", 6}, {"name", "bus"}}, {{"id", 85}, {"name", "clock"}}}},
                                               {"annotations", {{{"id", 1}, {"image_id", 7}, {"category_id", 6},
                                                                 {"bbox", {100, 100, 200, 150}}, {"area", 30000}, {"iscrowd", 0},
                                                                 {"segmentation", {{100, 100, 300, 100, 300, 250, 100, 250}}}}}}}
                                              .dump());
  }
  static void TearDownTestSuite() { dir_.reset(); }
  void SetUp() override {
    if (!dir_) GTEST_SKIP() << "reference fixtures not found (set PTQ4SAM_FIXTURES or put ../shared/fixtures beside the source tree)";
  }
  static std::string file(const std::string& name) { return dir_->file(name); }
  static std::unique_ptr<test::TempDir> dir_;
  static std::string detector_, photo_;
};
std::unique_ptr<test::TempDir> DetectCli::dir_;
std::string DetectCli::detector_, DetectCli::photo_;

TEST_F(DetectCli, DetectsTheFixturePhotoAsMmdetectionDoes) {
  const auto r = test::run_cli("detect --detector " + detector_ + " --images " + file("photo") + " --out " +
                               file("photo_dets.json") + " --show-dir " + file("photo_show") + " --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("detector: YOLOX (depth 0.33, width 0.125, 80 classes)"), std::string::npos) << r.output;
  const json dets = read_json(file("photo_dets.json"));
  // The golden's 104 detections (yolox_tiny/manifest.json counts), COCO ids, in the seed's
  // order (grouped by class).
  const json manifest = read_json(std::filesystem::path(detector_).parent_path().string() + "/manifest.json");
  EXPECT_EQ(dets.size(), manifest["counts"]["detections"].get<size_t>());
  int64_t previous_category = 0;
  for (const auto& d : dets) {
    EXPECT_EQ(d["image_id"], 7);
    EXPECT_GE(d["category_id"].get<int64_t>(), previous_category);
    previous_category = d["category_id"].get<int64_t>();
    EXPECT_GE(d["score"].get<double>(), 0.05);
    EXPECT_EQ(d["bbox"].size(), 4u);
  }
  EXPECT_TRUE(std::filesystem::exists(file("photo_show/000000000007.png")));

  // Started again with the same arguments: nothing to redo, the same file.
  const auto again = test::run_cli("detect --detector " + detector_ + " --images " + file("photo") + " --out " +
                                   file("photo_dets.json") + " --threads 2");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("resuming: 1 of 1 images already done"), std::string::npos) << again.output;
  EXPECT_EQ(read_json(file("photo_dets.json")), dets);
}

TEST_F(DetectCli, MapsClassesThroughTheAnnotations) {
  const auto r = test::run_cli("detect --detector " + detector_ + " --images " + file("photo") + " --annotations " +
                               file("photo.json") + " --out " + file("mapped.json") + " --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Only the classes the annotations name survive, under their ids (here bus 6, clock 85; the
  // golden detects both).
  const json mapped = read_json(file("mapped.json"));
  EXPECT_GT(mapped.size(), 1u);
  std::set<int64_t> categories;
  for (const auto& d : mapped) categories.insert(d["category_id"].get<int64_t>());
  EXPECT_EQ(categories, (std::set<int64_t>{6, 85}));
}

TEST_F(DetectCli, EvalWithADetectorReportsBothProtocols) {
  const std::string out = file("eval_det");
  const auto r = test::run_cli("eval --model " + file("model.pth") + " --detector " + detector_ + " --images " +
                               file("photo") + " --annotations " + file("photo.json") + " --out " + out +
                               " --threads 2 --show-dir " + out + "/show");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("the seed's protocol (mmdetection's maxDets 100, 300, 1000)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("maxDets=1000"), std::string::npos) << r.output;
  const json metrics = read_json(out + "/metrics.json");
  EXPECT_EQ(metrics["max_dets"], json({1, 10, 100}));
  EXPECT_EQ(metrics["seed_protocol"]["max_dets"], json({100, 300, 1000}));
  ASSERT_EQ(metrics["seed_protocol"]["stats"].size(), 12u);
  EXPECT_EQ(metrics["seed_protocol"]["AR1000"], metrics["seed_protocol"]["stats"][8]);
  EXPECT_EQ(metrics["AR100"], metrics["stats"][8]);
  // Every bus and clock detection prompts SAM (the same count as `detect` gives): no cap.
  const json results = read_json(out + "/results_segm.json");
  const auto dets = test::run_cli("detect --detector " + detector_ + " --images " + file("photo") + " --annotations " +
                                  file("photo.json") + " --out " + file("mapped_for_eval.json") + " --threads 2");
  ASSERT_EQ(dets.exit_code, 0) << dets.output;
  EXPECT_EQ(results.size(), read_json(file("mapped_for_eval.json")).size());
  for (const auto& res : results) EXPECT_TRUE(res["category_id"] == 6 || res["category_id"] == 85);
  // coco-eval reproduces both summaries from the results file.
  const auto seed = test::run_cli("coco-eval --annotations " + file("photo.json") + " --results " + out +
                                  "/results_segm.json --max-dets 100,300,1000 --out " + file("seed_metrics.json"));
  ASSERT_EQ(seed.exit_code, 0) << seed.output;
  EXPECT_EQ(read_json(file("seed_metrics.json"))["stats"], metrics["seed_protocol"]["stats"]);
  const auto standard = test::run_cli("coco-eval --annotations " + file("photo.json") + " --results " + out +
                                      "/results_segm.json --out " + file("std_metrics.json"));
  ASSERT_EQ(standard.exit_code, 0) << standard.output;
  EXPECT_EQ(read_json(file("std_metrics.json"))["stats"], metrics["stats"]);
  EXPECT_TRUE(std::filesystem::exists(out + "/show/000000000007.png"));
  const auto two = test::run_cli("coco-eval --annotations " + file("photo.json") + " --results " + out +
                                 "/results_segm.json --max-dets 100,300");
  EXPECT_NE(two.exit_code, 0) << two.output;
}

TEST_F(DetectCli, ImagesWithoutDetectionsGetTheSeedsPlaceholderBox) {
  // The synthetic scenes are no photos: the tiny detector finds nothing of its classes there,
  // and the seed prompts SAM with [0, 0, 0, 0] at score 0.1 (times SAM's IoU) instead.
  const std::string out = file("eval_placeholder");
  const auto r = test::run_cli("eval --model " + file("model.pth") + " --detector " + detector_ + " --images " +
                               file("data/images") + " --annotations " + file("data/instances.json") + " --out " + out +
                               " --threads 2 --score-thr 0.99");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json results = read_json(out + "/results_segm.json");
  ASSERT_EQ(results.size(), 3u);  // one placeholder per image
  for (const auto& res : results) {
    EXPECT_EQ(res["bbox"], json({0.0, 0.0, 0.0, 0.0}));
    EXPECT_LE(res["score"].get<double>(), 0.1 + 1e-9);
    // The first class, person, is not named in the synthetic categories: COCO's id 1 is.
    EXPECT_EQ(res["category_id"], 1);
  }
  const auto off = test::run_cli("eval --model " + file("model.pth") + " --detector " + detector_ + " --images " +
                                 file("data/images") + " --annotations " + file("data/instances.json") + " --out " +
                                 file("eval_no_placeholder") + " --threads 2 --score-thr 0.99 --no-placeholder-box");
  ASSERT_EQ(off.exit_code, 0) << off.output;
  EXPECT_EQ(read_json(file("eval_no_placeholder/results_segm.json")).size(), 0u);
  // With a results file, the placeholder is asked for.
  test::write_bytes(file("no_dets.json"), "[]");
  const auto prompts = test::run_cli("eval --model " + file("model.pth") + " --prompts " + file("no_dets.json") +
                                     " --images " + file("data/images") + " --annotations " + file("data/instances.json") +
                                     " --out " + file("eval_prompts_placeholder") + " --threads 2 --placeholder-box");
  ASSERT_EQ(prompts.exit_code, 0) << prompts.output;
  EXPECT_EQ(read_json(file("eval_prompts_placeholder/results_segm.json")).size(), 3u);
}

TEST_F(DetectCli, QuantizeCalibratesOnTheDetectorsBoxes) {
  test::write_bytes(file("fast.yaml"),
                    "a_qconfig: {quantizer: LSQFakeQuantize, observer: AvgMinMaxObserver, bit: 8, symmetric: False, ch_axis: -1}\n"
                    "w_qconfig: {quantizer: FixedFakeQuantize, observer: MinMaxObserver, bit: 8, symmetric: False, ch_axis: 0}\n"
                    "calibrate: 1\n"
                    "ptq4sam: {BIG: False, AGQ: False}\n");
  const std::string report = file("calib_report.json");
  const auto r = test::run_cli("quantize --model " + file("model.pth") + " --config " + file("fast.yaml") +
                               " --calib-images " + file("photo") + " --calib-annotations " + file("photo.json") +
                               " --calib-detector " + detector_ + " --out " + file("det.safetensors") + " --report " +
                               report + " --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("calibration prompts from YOLOX"), std::string::npos) << r.output;
  const json j = json::parse(test::read_bytes(report));
  EXPECT_EQ(j["calibration_images"], 1);
  // The bus and clock detections of the photo (the annotations name only those classes).
  EXPECT_GT(j["calibration_boxes"].get<int64_t>(), 1);
}

TEST_F(DetectCli, WrongFilesAreOneLineErrors) {
  const std::string fixtures = test::fixtures_dir();
  const auto sam = test::run_cli("detect --detector " + fixtures + "/sam_tiny/checkpoint.pth --images " + file("photo") +
                                 " --out " + file("x.json"));
  EXPECT_EQ(sam.exit_code, 1) << sam.output;
  EXPECT_NE(sam.output.find("not a YOLOX checkpoint"), std::string::npos) << sam.output;
  EXPECT_NE(sam.output.find("nor a Faster R-CNN one"), std::string::npos) << sam.output;
  test::write_bytes(file("junk.pth"), "junk");
  const auto junk = test::run_cli("detect --detector " + file("junk.pth") + " --images " + file("photo") + " --out " +
                                  file("x.json"));
  EXPECT_EQ(junk.exit_code, 1) << junk.output;
  EXPECT_NE(junk.output.find(file("junk.pth") + ": not a zip archive"), std::string::npos) << junk.output;
  // mmdetection's legacy file cut in its tensor data.
  const std::string legacy = test::read_bytes(detector_);
  test::write_bytes(file("cut.pth"), legacy.substr(0, legacy.size() / 2));
  const auto cut = test::run_cli("detect --detector " + file("cut.pth") + " --images " + file("photo") + " --out " +
                                 file("x.json"));
  EXPECT_EQ(cut.exit_code, 1) << cut.output;
  // Half the data is gone: the storages then claim more than the file holds.
  EXPECT_NE(cut.output.find(file("cut.pth") + ": tensor storage"), std::string::npos) << cut.output;
  EXPECT_NE(cut.output.find("is larger than what the file holds"), std::string::npos) << cut.output;
  std::filesystem::create_directories(file("corrupt"));
  test::write_bytes(file("corrupt/000000000001.jpg"), "\xff\xd8\xff not really a jpeg");
  const auto corrupt = test::run_cli("detect --detector " + detector_ + " --images " + file("corrupt") + " --out " +
                                     file("x.json"));
  EXPECT_EQ(corrupt.exit_code, 1) << corrupt.output;
  EXPECT_NE(corrupt.output.find("cannot decode image"), std::string::npos) << corrupt.output;
  const auto both = test::run_cli("eval --model " + file("model.pth") + " --detector " + detector_ + " --prompts gt --images " +
                                  file("photo") + " --annotations " + file("photo.json") + " --out " + file("both"));
  EXPECT_EQ(both.exit_code, 1) << both.output;
  EXPECT_NE(both.output.find("either --prompts or --detector"), std::string::npos) << both.output;
}

// The second detector of the seed goes through the same commands, recognised from its keys.
TEST_F(DetectCli, FasterRcnnThroughDetectEvalQuantizeAndBench) {
  const std::string frcnn = test::fixtures_dir() + "/faster_rcnn_tiny/checkpoint_mmdet.pth";
  if (!std::filesystem::exists(frcnn)) GTEST_SKIP() << "faster_rcnn_tiny fixture not found";
  const auto r = test::run_cli("detect --detector " + frcnn + " --images " + file("photo") + " --out " +
                               file("frcnn_dets.json") + " --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("detector: Faster R-CNN R50-FPN (base 16, FPN 32, fc 64, 80 classes)"), std::string::npos)
      << r.output;
  const json manifest = read_json(std::filesystem::path(frcnn).parent_path().string() + "/manifest.json");
  const json dets = read_json(file("frcnn_dets.json"));
  EXPECT_EQ(dets.size(), manifest["counts"]["detections"].get<size_t>());
  int64_t previous_category = 0;
  for (const auto& d : dets) {
    EXPECT_GE(d["category_id"].get<int64_t>(), previous_category);
    previous_category = d["category_id"].get<int64_t>();
    EXPECT_GT(d["score"].get<double>(), 0.05);
  }
  // The journal records the thresholds the detector ran with: the seed's rcnn test_cfg.
  const std::string journal = test::read_bytes(file("frcnn_dets.json.journal.jsonl"));
  const json header = json::parse(journal.substr(0, journal.find('\n')));
  EXPECT_FLOAT_EQ(header["run"]["nms_iou"].get<float>(), 0.5f) << header.dump();
  EXPECT_FLOAT_EQ(header["run"]["score_thr"].get<float>(), 0.05f) << header.dump();

  // eval --detector: every clock detection of the photo prompts SAM (bus: none here).
  const std::string out = file("eval_frcnn");
  const auto e = test::run_cli("eval --model " + file("model.pth") + " --detector " + frcnn + " --images " + file("photo") +
                               " --annotations " + file("photo.json") + " --out " + out + " --threads 2");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  size_t clocks = size_t(manifest["counts"]["detections_per_class"]["clock"].get<int64_t>());
  const json results = read_json(out + "/results_segm.json");
  EXPECT_EQ(results.size(), clocks);
  for (const auto& res : results) EXPECT_EQ(res["category_id"], 85);

  test::write_bytes(file("fast_frcnn.yaml"),
                    "a_qconfig: {quantizer: LSQFakeQuantize, observer: AvgMinMaxObserver, bit: 8, symmetric: False, ch_axis: -1}\n"
                    "w_qconfig: {quantizer: FixedFakeQuantize, observer: MinMaxObserver, bit: 8, symmetric: False, ch_axis: 0}\n"
                    "calibrate: 1\n"
                    "ptq4sam: {BIG: False, AGQ: False}\n");
  const auto q = test::run_cli("quantize --model " + file("model.pth") + " --config " + file("fast_frcnn.yaml") +
                               " --calib-images " + file("photo") + " --calib-annotations " + file("photo.json") +
                               " --calib-detector " + frcnn + " --out " + file("frcnn.safetensors") + " --report " +
                               file("frcnn_report.json") + " --threads 2");
  ASSERT_EQ(q.exit_code, 0) << q.output;
  EXPECT_NE(q.output.find("calibration prompts from Faster R-CNN"), std::string::npos) << q.output;
  EXPECT_EQ(read_json(file("frcnn_report.json"))["calibration_boxes"].get<size_t>(), clocks);

  const auto b = test::run_cli("bench --runs 1 --warmup 0 --threads 2 --detector " + frcnn);
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(b.output.find("Faster R-CNN R50-FPN FP32"), std::string::npos) << b.output;
}

TEST_F(DetectCli, BenchHasADetectorRow) {
  const auto r = test::run_cli("bench --runs 1 --warmup 0 --threads 2 --detector " + detector_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("YOLOX FP32"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("detector rows"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ptq4sam
