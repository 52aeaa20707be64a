// COCO masks and COCOeval against pycocotools' own numbers (coco_small fixture).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coco/eval.h"
#include "coco/rle.h"
#include "test_support.h"
#include "util/error.h"

namespace ptq4sam {
namespace {

using nlohmann::json;

json read_json(const std::string& path) { return json::parse(test::read_bytes(path)); }

TEST(CocoRle, MatchesPycocotoolsOnFixtureCases) {
  PTQ4SAM_REQUIRE_FIXTURES("coco_small");
  const json expected = read_json(fixtures + "/coco_small/expected.json");
  ASSERT_FALSE(expected["rle_cases"].empty());
  for (const auto& c : expected["rle_cases"]) {
    const int64_t h = c["size"][0], w = c["size"][1];
    std::vector<uint8_t> mask;
    for (const auto& row : c["rows"])
      for (const auto& v : row) mask.push_back(uint8_t(v.get<int>()));
    ASSERT_EQ(int64_t(mask.size()), h * w);
    const coco::Rle rle = coco::encode(mask.data(), h, w);
    EXPECT_EQ(coco::to_string(rle), c["counts"].get<std::string>());
    EXPECT_EQ(coco::area(rle), c["area"].get<uint64_t>());
    EXPECT_EQ(coco::to_bbox(rle), c["bbox"].get<std::vector<double>>());
    const coco::Rle back = coco::from_string(c["counts"].get<std::string>(), h, w);
    EXPECT_EQ(back.counts, rle.counts);
    EXPECT_EQ(coco::decode(back), mask);
  }
}

TEST(CocoRle, PolygonRasterisation) {
  // A 4x4 square from (1,1) to (5,5) covers pixels 1..4 in both axes: area 16, bbox [1,1,4,4].
  const coco::Rle square = coco::from_polygon({1, 1, 5, 1, 5, 5, 1, 5}, 8, 8);
  EXPECT_EQ(coco::area(square), 16u);
  EXPECT_EQ(coco::to_bbox(square), (std::vector<double>{1, 1, 4, 4}));
  // Union and intersection of two overlapping squares.
  const coco::Rle other = coco::from_polygon({3, 3, 7, 3, 7, 7, 3, 7}, 8, 8);
  EXPECT_EQ(coco::area(coco::merge({square, other})), 28u);
  EXPECT_EQ(coco::area(coco::merge({square, other}, true)), 4u);
  const auto ious = coco::iou({&square}, {&other}, {0});
  EXPECT_DOUBLE_EQ(ious[0], 4.0 / 28.0);
  const auto crowd = coco::iou({&square}, {&other}, {1});
  EXPECT_DOUBLE_EQ(crowd[0], 4.0 / 16.0);  // crowd: over the detection's area
}

TEST(CocoRle, RepeatedVerticesRasteriseAsTheirPolygon) {
  // Annotators' polygons repeat points; rleFrPoly divides 0 by 0 there (UBSan found it in the
  // fuzzer's seed ../shared/fixtures/coco_small/instances.json), and the point it makes is skipped, so the mask is that of the polygon
  // without the repeat.
  const coco::Rle plain = coco::from_polygon({1, 1, 5, 1, 5, 5, 1, 5}, 8, 8);
  for (const std::vector<double>& repeated : {std::vector<double>{1, 1, 5, 1, 5, 1, 5, 5, 1, 5},
                                              std::vector<double>{1, 1, 1, 1, 5, 1, 5, 5, 1, 5, 1, 5},
                                              std::vector<double>{2.3, 2.3, 2.3, 2.3, 2.3, 2.3}}) {
    const coco::Rle r = coco::from_polygon(repeated, 8, 8);
    if (repeated.size() == 6) {
      EXPECT_EQ(coco::area(r), 0u);  // one point, three times: no area
    } else {
      EXPECT_EQ(r.counts, plain.counts);
    }
  }
}

TEST(CocoRle, MalformedStringsAreErrors) {
  EXPECT_THROW(coco::from_string("\x01\x02", 2, 2, "x"), Error);
  EXPECT_THROW(coco::from_string("4", 3, 3, "x"), Error);  // runs do not cover the 9 pixels
}

class CocoEvalFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(CocoEvalFixture, TwelveStatsMatchPycocotools) {
  PTQ4SAM_REQUIRE_FIXTURES("coco_small");
  const std::string type = GetParam();
  const json expected = read_json(fixtures + "/coco_small/expected.json");
  const coco::Dataset gt = coco::load_annotations(fixtures + "/coco_small/instances.json");
  const auto dts = coco::load_results({fixtures + "/coco_small/results_" + type + ".json"}, gt, coco::parse_iou_type(type));
  const coco::EvalResult r = coco::evaluate(gt, dts, coco::parse_iou_type(type));
  const auto want = expected[type].get<std::vector<double>>();
  ASSERT_EQ(want.size(), 12u);
  for (size_t i = 0; i < 12; ++i) EXPECT_NEAR(r.stats[i], want[i], 1e-6) << type << " " << coco::kStatNames[i];
}

INSTANTIATE_TEST_SUITE_P(SegmAndBbox, CocoEvalFixture, ::testing::Values("segm", "bbox"));

// mmdetection's maxDets (100, 300, 1000), as pycocotools' summarize() reads them: the headline
// AP stays at its default 100 detections, AP50 ... APl and the area ARs move to maxDets[2], the
// three ARs to each. The fixture has at most a few dozen detections per image, so every figure
// taken at 300 or 1000 equals the standard one at 100.
TEST(CocoEval, MmdetectionMaxDetsFollowPycocotoolsSummary) {
  PTQ4SAM_REQUIRE_FIXTURES("coco_small");
  EXPECT_EQ(coco::summary_max_dets({100, 300, 1000}),
            (std::array<int, 12>{100, 1000, 1000, 1000, 1000, 1000, 100, 300, 1000, 1000, 1000, 1000}));
  EXPECT_EQ(coco::summary_max_dets({1, 10, 100}), (std::array<int, 12>{100, 100, 100, 100, 100, 100, 1, 10, 100, 100, 100, 100}));
  const coco::Dataset gt = coco::load_annotations(fixtures + "/coco_small/instances.json");
  const auto dts = coco::load_results({fixtures + "/coco_small/results_segm.json"}, gt, coco::IouType::kSegm);
  const coco::EvalResult standard = coco::evaluate(gt, dts, coco::IouType::kSegm);
  // Without 100 among them the headline AP is undefined (-1), as pycocotools' empty selection.
  coco::EvalParams no_100;
  no_100.max_dets = {10, 20, 30};
  EXPECT_EQ(coco::evaluate(gt, dts, coco::IouType::kSegm, no_100).stats[0], -1.0);
  coco::EvalParams two;
  two.max_dets = {1, 10};
  EXPECT_THROW(coco::evaluate(gt, dts, coco::IouType::kSegm, two), Error);
  coco::EvalParams seed;
  seed.max_dets = {100, 300, 1000};
  const coco::EvalResult r = coco::evaluate(gt, dts, coco::IouType::kSegm, seed);
  EXPECT_NE(coco::summary_text(r.stats, seed.max_dets).find("maxDets=1000 ] ="), std::string::npos);
  std::map<int64_t, size_t> per_image;
  for (const auto& d : dts) ++per_image[d.image_id];
  size_t most = 0;
  for (const auto& [id, n] : per_image) most = std::max(most, n);
  if (most > 100) GTEST_SKIP() << "an image has more than 100 results: 300 and 1000 would differ from 100";
  for (size_t i = 0; i < 6; ++i) EXPECT_DOUBLE_EQ(r.stats[i], standard.stats[i]) << coco::kStatNames[i];
  for (size_t i = 6; i < 9; ++i) EXPECT_DOUBLE_EQ(r.stats[i], standard.stats[8]) << i;  // all at >= 100
  for (size_t i = 9; i < 12; ++i) EXPECT_DOUBLE_EQ(r.stats[i], standard.stats[i]) << coco::kStatNames[i];
}

TEST(CocoEvalCli, PrintsSummaryWritesMetricsAndMergesShards) {
  PTQ4SAM_REQUIRE_FIXTURES("coco_small");
  test::TempDir dir;
  const std::string d = fixtures + "/coco_small";
  // Split the results into two "shards" by image id parity: merged, they score the same.
  const json all = read_json(d + "/results_segm.json");
  json even = json::array(), odd = json::array();
  for (const auto& r : all) (r["image_id"].get<int64_t>() % 2 ? odd : even).push_back(r);
  test::write_bytes(dir.file("even.json"), even.dump());
  test::write_bytes(dir.file("odd.json"), odd.dump());
  const test::CommandResult r = test::run_cli("coco-eval --annotations " + d + "/instances.json --results " +
                                              dir.file("even.json") + " " + dir.file("odd.json") +
                                              " --iou-type segm --out " + dir.file("metrics.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"), std::string::npos)
      << r.output;
  const json metrics = read_json(dir.file("metrics.json"));
  const json expected = read_json(d + "/expected.json");
  EXPECT_EQ(metrics["iou_type"], "segm");
  EXPECT_NEAR(metrics["AP"].get<double>(), expected["segm"][0].get<double>(), 1e-6);
  EXPECT_NEAR(metrics["ARl"].get<double>(), expected["segm"][11].get<double>(), 1e-6);
  EXPECT_EQ(metrics["stats"].size(), 12u);
}

TEST(CocoDataset, HostileSizesAndPolygonsAreErrors) {
  test::TempDir dir;
  const auto error_of = [&](const json& gt) {
    test::write_bytes(dir.file("gt.json"), gt.dump());
    try {
      coco::load_annotations(dir.file("gt.json"));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const json category = {{{"id", 1}, {"name", "a"}}};
  // 2^16 x 2^16 pixels: the whole-image run length would not fit pycocotools' 32 bits.
  const json huge = {{"images", {{{"id", 1}, {"height", 65536}, {"width", 65536}}}}, {"categories", category},
                     {"annotations", json::array()}};
  EXPECT_NE(error_of(huge).find("gt.json: image 1 is too large (65536x65536)"), std::string::npos) << error_of(huge);
  // A polygon vertex a billion pixels away: refused before the rasteriser walks to it.
  const json far = {{"images", {{{"id", 1}, {"height", 50}, {"width", 60}}}}, {"categories", category},
                    {"annotations", {{{"id", 1}, {"image_id", 1}, {"category_id", 1}, {"iscrowd", 0}, {"area", 10},
                                      {"bbox", {1, 1, 5, 5}}, {"segmentation", {{1, 1, 1e9, 1, 5, 5}}}}}}};
  EXPECT_NE(error_of(far).find("lies far outside the 60x50 image"), std::string::npos) << error_of(far);
}

TEST(CocoDataset, NumberPastDoublesRangeIsAnError) {
  // The parser refuses 1E7055 with out_of_range, not parse_error (the fuzzer's crash-cb92d8...).
  test::TempDir dir;
  test::write_bytes(dir.file("huge.json"), "{\"images\": [{\"id\": 1, \"height\": 0.97E7055}]}");
  try {
    coco::read_json_file(dir.file("huge.json"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), dir.file("huge.json") + ": malformed JSON (a number out of range)");
  }
}

TEST(CocoEvalCli, BadInputs) {
  PTQ4SAM_REQUIRE_FIXTURES("coco_small");
  test::TempDir dir;
  const std::string ann = fixtures + "/coco_small/instances.json";
  test::write_bytes(dir.file("broken.json"), "[{\"image_id\": 1, \"category_id\": 1,");
  auto r = test::run_cli("coco-eval --annotations " + ann + " --results " + dir.file("broken.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find(dir.file("broken.json") + ": malformed JSON at byte"), std::string::npos) << r.output;
  test::write_bytes(dir.file("unknown.json"), R"([{"image_id": 999999, "category_id": 1, "bbox": [0,0,1,1], "score": 0.5}])");
  r = test::run_cli("coco-eval --annotations " + ann + " --iou-type bbox --results " + dir.file("unknown.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("image_id 999999 is not in the ground truth"), std::string::npos) << r.output;
  test::write_bytes(dir.file("nan.json"), R"([{"image_id": 1, "category_id": 1, "bbox": [0,0,-4,1], "score": 0.5}])");
  r = test::run_cli("coco-eval --annotations " + ann + " --iou-type bbox --results " + dir.file("nan.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("negative width or height"), std::string::npos) << r.output;
  // Empty results: pycocotools fails; we score 0 where there is ground truth.
  test::write_bytes(dir.file("empty.json"), "[]");
  r = test::run_cli("coco-eval --annotations " + ann + " --iou-type bbox --results " + dir.file("empty.json") +
                    " --out " + dir.file("m.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_json(dir.file("m.json"))["AP"].get<double>(), 0.0);
}

}  // namespace
}  // namespace ptq4sam
