// The fuzz targets without clang: every file of fuzz/corpus/ and fuzz/crashes/ replayed through
// the same entry points as libFuzzer's (fuzz/targets.h), and the valid files our writers make
// (the fuzzers' seeds) accepted by them.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "coco/rle.h"
#include "fuzz/targets.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "quant/artifact.h"
#include "quant/calibrate.h"
#include "quant/quantized_sam.h"
#include "quant_test_support.h"
#include "sam/random_weights.h"
#include "test_support.h"
#include "util/error.h"

namespace ptq4sam {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> files;
  if (!fs::is_directory(dir)) return files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

fuzz::Outcome replay(const std::string& target, const fs::path& file) {
  const std::string bytes = test::read_bytes(file.string());
  return fuzz::run_target(target, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// Every corpus and crash file ends in a clean result or a one-line error naming the input. A
// folder that names no target is a mistake (its files would never be replayed).
TEST(FuzzReplay, EveryCorpusAndCrashFileEndsCleanly) {
  const fs::path root(PTQ4SAM_FUZZ_DIR);
  const auto& names = fuzz::target_names();
  size_t replayed = 0;
  for (const char* kind : {"corpus", "crashes"}) {
    if (!fs::is_directory(root / kind)) continue;
    for (const auto& entry : fs::directory_iterator(root / kind)) {
      if (!entry.is_directory()) continue;  // .gitkeep
      const std::string target = entry.path().filename().string();
      ASSERT_NE(std::find(names.begin(), names.end(), target), names.end()) << entry.path() << " names no fuzz target";
      for (const fs::path& file : files_under(entry.path())) {
        EXPECT_NO_THROW(replay(target, file)) << file;
        ++replayed;
      }
    }
  }
  for (const std::string& target : names)
    EXPECT_FALSE(files_under(root / "corpus" / target).empty()) << "fuzz/corpus/" << target << " is empty";
  EXPECT_GT(replayed, names.size());
}

// The fixtures' files that fuzz/run.sh seeds the fuzzers with, read from ../shared rather than
// copied into fuzz/ (coco_small/instances.json is where the polygon 0/0 of CocoRle's
// RepeatedVerticesRasteriseAsTheirPolygon was found).
TEST(FuzzReplay, FixtureSeedsEndCleanly) {
  PTQ4SAM_REQUIRE_FIXTURES("coco_small");
  const std::pair<const char*, const char*> seeds[] = {{"coco_annotations", "coco_small/instances.json"},
                                                       {"coco_results", "coco_small/results_segm.json"},
                                                       {"coco_results", "coco_small/results_bbox.json"},
                                                       {"image", "sam_tiny/image.jpg"}};
  for (const auto& [target, file] : seeds) {
    const fs::path path = fs::path(fixtures) / file;
    if (!fs::exists(path)) continue;
    EXPECT_NO_THROW(replay(target, path)) << path;
  }
}

TEST(FuzzReplay, UnknownTargetIsRefused) {
  const uint8_t byte = 0;
  EXPECT_THROW(fuzz::run_target("no_such_reader", &byte, 1), std::invalid_argument);
}

TEST(FuzzReplay, ErrorsStayOnOneLine) {
  const Error e("keys.json", "unknown key 'a\nb\x7f'");
  EXPECT_STREQ(e.what(), "keys.json: unknown key 'a\\x0ab\\x7f'");
}

// The seeds: one valid file per target, made by our writers. Each must be accepted (else the
// fuzzer would start from files that stop at the first check). With PTQ4SAM_FUZZ_SEEDS=DIR they
// are kept in DIR/<target>/ for fuzz/run.sh.
class FuzzSeeds : public ::testing::Test {
 protected:
  void expect_accepted(const std::string& target, const std::string& name, const std::string& bytes) {
    EXPECT_EQ(fuzz::run_target(target, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
              fuzz::Outcome::kAccepted)
        << target << "/" << name;
    const char* keep = std::getenv("PTQ4SAM_FUZZ_SEEDS");
    if (keep && *keep) {
      fs::create_directories(fs::path(keep) / target);
      test::write_bytes((fs::path(keep) / target / name).string(), bytes);
    }
  }
  void expect_file_accepted(const std::string& target, const std::string& name) {
    expect_accepted(target, name, test::read_bytes(dir_.file(name)));
  }
  test::TempDir dir_;
};

TEST_F(FuzzSeeds, CheckpointsAreAccepted) {
  io::StateDict state;
  state.insert("model.w", at::arange(12, at::kFloat).view({3, 4}));
  state.insert("model.b", at::arange(6, at::kLong).view({2, 3}).t());
  state.insert("meta.n", at::ones({2}, at::kHalf));
  io::save_checkpoint(dir_.file("zip.pth"), state);
  expect_file_accepted("checkpoint", "zip.pth");
  expect_accepted("checkpoint", "legacy.pth", test::legacy_file(6, {1, 2, 3, 4, 5, 6}, {2, 2}, {1, 2}));
}

TEST_F(FuzzSeeds, SafetensorsAndNpyAreAccepted) {
  io::write_safetensors(dir_.file("small.safetensors"),
                        {{"a", at::arange(6, at::kFloat).view({2, 3})}, {"b", at::ones({4}, at::kByte)}},
                        {{"format", "pt"}});
  expect_file_accepted("safetensors", "small.safetensors");
  io::write_npy(dir_.file("f32.npy"), at::arange(6, at::kFloat).view({1, 2, 3}));
  expect_file_accepted("npy", "f32.npy");
  io::write_npy(dir_.file("i64.npy"), at::arange(3, at::kLong));
  expect_file_accepted("npy", "i64.npy");
}

// A small random SAM quantized at W4A4 with AGQ, encoder included: every kind of tensor and
// quantizer an artifact holds.
TEST_F(FuzzSeeds, ArtifactIsAccepted) {
  io::StateDict state = sam::random_state_dict(sam::vit_config(64, 2, 2, {1}), 7);
  const auto model = sam::make_sam(state);
  quant::QuantizedSam qsam(model, test::config_of(4, true, true), true);
  const at::Tensor image = at::randint(0, 256, {96, 128, 3}, at::kByte);
  quant::calibrate(qsam, 1, [&](size_t) { return quant::CalibrationSample{"synthetic", image, {{10, 10, 90, 70}}}; });
  quant::save_artifact(qsam, dir_.file("w4a4.safetensors"));
  expect_file_accepted("artifact", "w4a4.safetensors");
}

TEST_F(FuzzSeeds, CocoFilesAreAccepted) {
  const nlohmann::json annotations = {
      {"images", {{{"id", 1}, {"width", 64}, {"height", 48}, {"file_name", "a.jpg"}}}},
      {"categories", {{{"id", 1}, {"name", "cat"}}}},
      {"annotations", {{{"id", 1}, {"image_id", 1}, {"category_id", 1}, {"iscrowd", 0}, {"bbox", {4, 4, 20, 10}},
                        {"area", 200}, {"segmentation", {{4, 4, 24, 4, 24, 14, 4, 14}}}},
                       {{"id", 2}, {"image_id", 1}, {"category_id", 1}, {"iscrowd", 1}, {"bbox", {0, 0, 4, 2}},
                        {"area", 8}, {"segmentation", {{"size", {48, 64}}, {"counts", {0, 2, 46, 2, 3022}}}}}}}};
  expect_accepted("coco_annotations", "instances.json", annotations.dump());
  const double box[4] = {8, 6, 30, 20};
  const std::string counts = coco::to_string(coco::from_bbox(box, 48, 64));
  const nlohmann::json segm = {{{"image_id", 1}, {"category_id", 1}, {"score", 0.9},
                                {"segmentation", {{"size", {48, 64}}, {"counts", counts}}}}};
  expect_accepted("coco_results", "segm.json", segm.dump());
  const nlohmann::json bbox = {{{"image_id", 2}, {"category_id", 3}, {"score", 0.5}, {"bbox", {1, 2, 10, 8}}}};
  expect_accepted("coco_results", "bbox.json", bbox.dump());
}

TEST_F(FuzzSeeds, ConfigsPromptsAndImagesAreAccepted) {
  for (const char* config : {"w4a4.yaml", "w6a6_recon.yaml"})
    expect_accepted("qconfig", config, test::read_bytes(std::string(PTQ4SAM_SOURCE_DIR) + "/configs/" + config));
  expect_accepted("prompt_options", "point.txt", std::string("\x00", 1) + "400,290.5,1");
  expect_accepted("prompt_options", "box.txt", "\x01-20,10,900,200");
  io::write_png(dir_.file("rgb.png"), at::randint(0, 256, {9, 7, 3}, at::kByte));
  expect_file_accepted("image", "rgb.png");
  io::write_png(dir_.file("gray.png"), at::randint(0, 256, {5, 6}, at::kByte));
  expect_file_accepted("image", "gray.png");
}

}  // namespace
}  // namespace ptq4sam
