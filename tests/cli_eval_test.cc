// `ptq4sam synth-coco` + `eval` end to end: outputs, resume after a kill, shards, bad inputs.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "eval/journal.h"
#include "eval/synthetic.h"
#include "io/checkpoint.h"
#include "sam/random_weights.h"
#include "test_support.h"
#include "util/error.h"

extern char** environ;

namespace ptq4sam {
namespace {

using nlohmann::json;

json read_json(const std::string& path) { return json::parse(test::read_bytes(path)); }

size_t count_lines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

class EvalCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>();
    test::write_small_model(dir_->file("model.pth"), 5);
    eval::SyntheticOptions options;
    options.images = 6;
    options.min_side = 96;
    options.max_side = 160;
    eval::write_synthetic_coco(dir_->file("data"), options);
  }
  static void TearDownTestSuite() { dir_.reset(); }
  static std::string file(const std::string& name) { return dir_->file(name); }
  static std::string args(const std::string& out, const std::string& extra = "") {
    return "eval --model " + file("model.pth") + " --images " + file("data/images") + " --annotations " +
           file("data/instances.json") + " --prompts " + file("data/detections.json") + " --threads 1 --out " + out +
           " " + extra;
  }
  static std::unique_ptr<test::TempDir> dir_;
};

std::unique_ptr<test::TempDir> EvalCli::dir_;

// A journal line that parses as JSON but is no entry: one line naming the journal.
TEST(Journal, AnEntryWithoutImageIdIsAnError) {
  test::TempDir dir;
  const json run = {{"model", "m"}};
  {
    eval::Journal journal(dir.file("journal.jsonl"), run);
    journal.append(3, json::array());
  }
  test::write_bytes(dir.file("journal.jsonl"), test::read_bytes(dir.file("journal.jsonl")) + "{\"results\": []}\n");
  try {
    eval::Journal again(dir.file("journal.jsonl"), run);
    ADD_FAILURE() << "a journal with a broken entry opened";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("journal.jsonl: line at byte"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("is not a journal entry"), std::string::npos) << e.what();
  }
}

TEST_F(EvalCli, WritesResultsAndMetricsThatCocoEvalReproduces) {
  const test::CommandResult r = test::run_cli(args(file("full"), "--show-dir " + file("full/show")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("eval [6/6]"), std::string::npos) << r.output;
  const json results = read_json(file("full/results_segm.json"));
  EXPECT_EQ(results.size(), read_json(file("data/detections.json")).size());
  for (const auto& res : results) {
    EXPECT_TRUE(res["segmentation"]["counts"].is_string());
    EXPECT_TRUE(std::isfinite(res["score"].get<double>()));  // detector score x predicted IoU
  }
  const json metrics = read_json(file("full/metrics.json"));
  ASSERT_EQ(metrics["stats"].size(), 12u);
  const test::CommandResult again = test::run_cli("coco-eval --annotations " + file("data/instances.json") +
                                                  " --results " + file("full/results_segm.json") + " --out " +
                                                  file("full/again.json"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(read_json(file("full/again.json"))["stats"], metrics["stats"]);
  EXPECT_TRUE(std::filesystem::exists(file("full/show/synth_00006.png")));
}

TEST_F(EvalCli, ResumesAfterAKillWithIdenticalResults) {
  const test::CommandResult reference = test::run_cli(args(file("reference")));
  ASSERT_EQ(reference.exit_code, 0) << reference.output;
  // Start a run, kill it once the journal holds some but not all images, start it again.
  const std::string out = file("killed");
  std::vector<std::string> argv_s = {PTQ4SAM_BINARY};
  std::istringstream words(args(out));
  for (std::string w; words >> w;) argv_s.push_back(w);
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, PTQ4SAM_BINARY, nullptr, nullptr, argv.data(), environ), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (count_lines(out + "/journal.jsonl") < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  const size_t journaled = count_lines(out + "/journal.jsonl");
  ASSERT_GE(journaled, 3u);
  ASSERT_LT(journaled, 7u) << "the run finished before it could be killed";
  EXPECT_FALSE(std::filesystem::exists(out + "/results_segm.json"));
  // A torn last line, as a kill mid-write leaves it, is repaired too.
  { std::ofstream(out + "/journal.jsonl", std::ios::app) << "{\"image_id\": 6, \"resu"; }
  const test::CommandResult resumed = test::run_cli(args(out));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming:"), std::string::npos);
  EXPECT_EQ(test::read_bytes(out + "/results_segm.json"), test::read_bytes(file("reference/results_segm.json")));
  EXPECT_EQ(test::read_bytes(out + "/metrics.json"), test::read_bytes(file("reference/metrics.json")));
}

TEST_F(EvalCli, ShardsMergeIntoTheWholeScore) {
  const test::CommandResult whole = test::run_cli(args(file("whole")));
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  for (const char* shard : {"0/2", "1/2"}) {
    const std::string name = std::string("shard") + shard[0];
    const test::CommandResult r = test::run_cli(args(file(name), std::string("--shard ") + shard));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const test::CommandResult merged = test::run_cli(
      "coco-eval --annotations " + file("data/instances.json") + " --results " + file("shard0/results_segm.json") +
      " " + file("shard1/results_segm.json") + " --out " + file("merged.json"));
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  EXPECT_EQ(read_json(file("merged.json"))["stats"], read_json(file("whole/metrics.json"))["stats"]);
}

TEST_F(EvalCli, BadInputs) {
  auto expect_error = [&](const std::string& a, const std::string& message) {
    const test::CommandResult r = test::run_cli(a);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("ptq4sam: error: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
  };
  const std::string base = "eval --model " + file("model.pth") + " --images " + file("data/images") +
                           " --annotations " + file("data/instances.json") + " --out " + file("bad") + " --prompts ";
  test::write_bytes(file("dets_unknown_image.json"), R"([{"image_id": 77, "category_id": 1, "bbox": [1,1,5,5], "score": 0.9}])");
  expect_error(base + file("dets_unknown_image.json"), "detection 0: unknown image_id 77");
  test::write_bytes(file("dets_unknown_cat.json"), R"([{"image_id": 1, "category_id": 42, "bbox": [1,1,5,5], "score": 0.9}])");
  expect_error(base + file("dets_unknown_cat.json"), "unknown category_id 42");
  test::write_bytes(file("dets_nan.json"), R"([{"image_id": 1, "category_id": 1, "bbox": [null,1,5,5], "score": 0.9}])");
  expect_error(base + file("dets_nan.json"), "bbox has a NaN");
  test::write_bytes(file("dets_negative.json"), R"([{"image_id": 1, "category_id": 1, "bbox": [1,1,-5,5], "score": 0.9}])");
  expect_error(base + file("dets_negative.json"), "negative width or height");
  test::write_bytes(file("dets_broken.json"), R"([{"image_id": 1, "category_id": )");
  expect_error(base + file("dets_broken.json"), file("dets_broken.json") + ": malformed JSON at byte");
  expect_error(base + "gt --shard 2/2", "--shard '2/2': expected I/N");
  // An image that is missing, and one whose size differs from the annotations.
  const json gt = read_json(file("data/instances.json"));
  json missing = gt;
  missing["images"][0]["file_name"] = "nowhere.png";
  test::write_bytes(file("missing.json"), missing.dump());
  expect_error("eval --model " + file("model.pth") + " --images " + file("data/images") + " --annotations " +
                   file("missing.json") + " --prompts gt --out " + file("bad_missing"),
               "nowhere.png: cannot open image file");
  json resized = gt;
  resized["images"][0]["width"] = gt["images"][0]["width"].get<int>() + 1;
  resized["annotations"] = json::array();
  test::write_bytes(file("resized.json"), resized.dump());
  expect_error("eval --model " + file("model.pth") + " --images " + file("data/images") + " --annotations " +
                   file("resized.json") + " --prompts gt --out " + file("bad_resized"),
               "but the annotations say");
  // A journal of other arguments is not mixed into this run.
  ASSERT_EQ(test::run_cli(args(file("journal_run"), "--limit 1")).exit_code, 0);
  expect_error(args(file("journal_run"), "--limit 2"), "journal of a run with other arguments");
}

}  // namespace
}  // namespace ptq4sam
