// `ptq4sam segment` end to end, and every bad input it must refuse with a one-line error.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <fstream>
#include <sstream>

#include "io/checkpoint.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/zip_archive.h"
#include "sam/random_weights.h"
#include "test_support.h"

namespace ptq4sam {
namespace {

// A small random model and a synthetic 96 x 128 image, shared by the bad-input tests.
class SegmentCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>();
    test::write_small_model(model(), 3);
    io::write_png(image(), (at::rand({96, 128, 3}) * 255).to(at::kByte));
  }
  static void TearDownTestSuite() { dir_.reset(); }
  static std::string model() { return dir_->file("model.pth"); }
  static std::string image() { return dir_->file("image.png"); }
  static std::string file(const std::string& name) { return dir_->file(name); }

  // Runs segment expecting failure: exit code 1 and exactly one error line containing `expected`.
  static void expect_error(const std::string& args, const std::string& expected) {
    const test::CommandResult r = test::run_cli("segment " + args + " --out " + file("out"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    std::istringstream lines(r.output);
    std::string line;
    int error_lines = 0;
    while (std::getline(lines, line)) {
      if (line.rfind("ptq4sam: error: ", 0) == 0) {
        ++error_lines;
        EXPECT_NE(line.find(expected), std::string::npos) << line;
      }
    }
    EXPECT_EQ(error_lines, 1) << r.output;
  }

  static std::unique_ptr<test::TempDir> dir_;
};

std::unique_ptr<test::TempDir> SegmentCli::dir_;

TEST_F(SegmentCli, HelpShowsAnExample) {
  const test::CommandResult r = test::run_cli("segment --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("Example:"), std::string::npos);
  EXPECT_NE(r.output.find("--point"), std::string::npos);
}

TEST_F(SegmentCli, WritesMasksOverlayAndResult) {
  const test::CommandResult r = test::run_cli("segment --model " + model() + " --image " + image() +
                                              " --point 60,40,1 --point 10,10,0 --multimask --threads 1 --out " +
                                              file("ok") + " --save-logits " + file("ok/logits.npy") +
                                              " --save-low-res " + file("ok/low.npy"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("image encoder:"), std::string::npos);
  const auto result = nlohmann::json::parse(test::read_bytes(file("ok/result.json")));
  ASSERT_EQ(result["masks"].size(), 3u);
  EXPECT_EQ(io::read_image_rgb(file("ok/mask_2.png")).size(0), 96);
  EXPECT_EQ(io::read_image_rgb(file("ok/overlay.png")).size(1), 128);
  const at::Tensor logits = io::read_npy(file("ok/logits.npy"));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 96, 128}));
  EXPECT_EQ(io::read_npy(file("ok/low.npy")).sizes(), (std::vector<int64_t>{3, 256, 256}));
  // The reported area is the count of positive logits.
  EXPECT_EQ(result["masks"][1]["area"].get<int64_t>(), (logits[1] > 0).sum().item<int64_t>());
}

TEST_F(SegmentCli, BoxPartlyOutsideIsClipped) {
  const test::CommandResult r = test::run_cli("segment --model " + model() + " --image " + image() +
                                              " --box -20,10,90,200 --threads 1 --out " + file("clip"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(SegmentCli, TruncatedCheckpoint) {
  const std::string bytes = test::read_bytes(model());
  test::write_bytes(file("cut.pth"), bytes.substr(0, bytes.size() / 2));
  expect_error("--model " + file("cut.pth") + " --image " + image() + " --point 5,5,1", file("cut.pth") + ": truncated");
}

TEST_F(SegmentCli, NotAZip) {
  test::write_bytes(file("notzip.pth"), std::string(4096, '\x42'));
  expect_error("--model " + file("notzip.pth") + " --image " + image() + " --point 5,5,1",
               file("notzip.pth") + ": not a zip archive");
}

TEST_F(SegmentCli, ForbiddenGlobal) {
  const std::string pickle = std::string("\x80\x02") + "cposix\nsystem\n" + "X\x04\x00\x00\x00true" + "\x85R.";
  {
    std::ofstream out(file("evil.pth"), std::ios::binary);
    io::ZipWriter zip(out, file("evil.pth"));
    zip.add("archive/data.pkl", pickle.data(), pickle.size());
    zip.finish();
  }
  expect_error("--model " + file("evil.pth") + " --image " + image() + " --point 5,5,1",
               "forbidden global 'posix.system'");
}

TEST_F(SegmentCli, CorruptImage) {
  const std::string png = test::read_bytes(image());
  test::write_bytes(file("corrupt.png"), png.substr(0, 40) + std::string(200, '\0'));
  expect_error("--model " + model() + " --image " + file("corrupt.png") + " --point 5,5,1",
               file("corrupt.png") + ": cannot decode image");
  expect_error("--model " + model() + " --image " + file("missing.jpg") + " --point 5,5,1",
               file("missing.jpg") + ": cannot open image file");
}

TEST_F(SegmentCli, PromptsOutsideTheImage) {
  expect_error("--model " + model() + " --image " + image() + " --point 500,10,1",
               "--point '500,10,1': point lies outside the 128x96 image");
  expect_error("--model " + model() + " --image " + image() + " --box 200,10,300,50",
               "--box '200,10,300,50': box lies entirely outside the 128x96 image");
  expect_error("--model " + model() + " --image " + image() + " --box 50,60,10,70", "box has x1 < x0");
  expect_error("--model " + model() + " --image " + image() + " --point 5,five,1", "--point '5,five,1': expected X,Y,LABEL");
  expect_error("--model " + model() + " --image " + image() + " --point 5,5,2", "LABEL must be 1");
  expect_error("--model " + model() + " --image " + image(), "give at least one --point");
}

TEST_F(SegmentCli, MalformedMaskInput) {
  test::write_bytes(file("bad.npy"), "\x93NUMPY\x01\x00garbage");
  expect_error("--model " + model() + " --image " + image() + " --mask-input " + file("bad.npy"), file("bad.npy") + ": ");
  io::write_npy(file("small.npy"), at::zeros({1, 64, 64}));
  expect_error("--model " + model() + " --image " + image() + " --mask-input " + file("small.npy"),
               file("small.npy") + ": mask input must be float logits of shape 1 x 256 x 256");
}

// The fixture photo and prompt through the binary: the IoU of the official implementation.
TEST(SegmentCliFixture, BoxCaseMatchesGolden) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny");
  test::TempDir dir;
  const std::string f = fixtures + "/sam_tiny";
  const auto cases = nlohmann::json::parse(test::read_bytes(f + "/cases.json"));
  const auto& box_case = cases["cases"][0];
  ASSERT_TRUE(box_case.contains("box"));
  std::ostringstream box;
  box << box_case["box"][0].get<double>() << "," << box_case["box"][1].get<double>() << ","
      << box_case["box"][2].get<double>() << "," << box_case["box"][3].get<double>();
  const test::CommandResult r = test::run_cli("segment --model " + f + "/checkpoint.pth --image " + f +
                                              "/image.jpg --box " + box.str() + " --out " + dir.path() +
                                              " --save-embedding " + dir.file("emb.npy"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::StateDict golden = io::load_checkpoint(f + "/golden.pth");
  const auto result = nlohmann::json::parse(test::read_bytes(dir.file("result.json")));
  const std::string name = box_case["name"];
  EXPECT_NEAR(result["masks"][0]["predicted_iou"].get<double>(), golden.at(name + ".iou")[0].item<double>(), 1e-3);
  const at::Tensor mask = io::read_image_rgb(dir.file("mask_0.png")).select(2, 0) > 127;
  const at::Tensor expected = golden.at(name + ".masks")[0] > 0;
  EXPECT_GE((mask == expected).to(at::kDouble).mean().item<double>(), 0.999);
  EXPECT_EQ(io::read_npy(dir.file("emb.npy")).sizes(), (std::vector<int64_t>{256, 64, 64}));
}

}  // namespace
}  // namespace ptq4sam
