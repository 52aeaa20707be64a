// The CPU-level switch (kernels/cpu_isa.h): every level computes the same numbers. In process,
// ScopedCpuLimit moves our kernels (oneDNN's float32 products keep their level, so what differs
// between the runs is ours alone); CI runs the numeric suites again under PTQ4SAM_CPU=generic
// (scripts/test.sh), which moves oneDNN too.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "kernels/cpu_isa.h"
#include "kernels/exp.h"
#include "kernels/gelu.h"
#include "kernels/quantized_linear.h"
#include "quant/artifact.h"
#include "quant/calibrate.h"
#include "quant/quantized_sam.h"
#include "quant_test_support.h"
#include "sam/predictor.h"
#include "sam/random_weights.h"
#include "test_support.h"

namespace ptq4sam {
namespace {

using kernels::CpuIsa;

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), size_t(a.nbytes())) == 0;
}

TEST(CpuPaths, ScopedLimitLowersTheLevelAndRestoresIt) {
  const CpuIsa own = kernels::cpu_isa();
  const bool own_vnni = kernels::cpu_vnni();
  {
    const kernels::ScopedCpuLimit generic(CpuIsa::kGeneric);
    EXPECT_EQ(kernels::cpu_isa(), CpuIsa::kGeneric);
    EXPECT_FALSE(kernels::cpu_vnni());
    EXPECT_FALSE(kernels::integer_matmul_exact());
  }
  EXPECT_EQ(kernels::cpu_isa(), own);
  EXPECT_EQ(kernels::cpu_vnni(), own_vnni);
  {
    // A limit never raises the level above the CPU's (or PTQ4SAM_CPU's).
    const kernels::ScopedCpuLimit avx512(CpuIsa::kAvx512, true);
    EXPECT_EQ(kernels::cpu_isa(), own);
  }
}

// GELU on every level: normal values over the range where it bends, the tails, signed zeros,
// subnormals and non-finite values.
TEST(CpuPaths, GeluGivesTheSameBitsOnEveryLevel) {
  at::manual_seed(3);
  at::Tensor x = at::cat({at::randn({100003}) * 4.0f,
                          at::tensor({0.0f, -0.0f, 1e-40f, -1e-40f, 9.5f, -9.5f, 40.0f, -40.0f, 1e30f, -1e30f,
                                      std::numeric_limits<float>::infinity(),
                                      -std::numeric_limits<float>::infinity()})});
  at::Tensor own = x.clone();
  kernels::gelu_(own);
  for (const CpuIsa level : {CpuIsa::kAvx2, CpuIsa::kGeneric}) {
    const kernels::ScopedCpuLimit limit(level);
    at::Tensor lower = x.clone();
    kernels::gelu_(lower);
    EXPECT_TRUE(same_bits(own, lower)) << kernels::to_string(level) << ": max |diff| "
                                       << (own - lower).abs().nan_to_num(0).max().item<float>();
  }
}

// The README's "within 2 ulp of expf" for the exponential every level shares, over its whole
// domain of use (x <= 0 down to the clamp) on a fine grid.
TEST(CpuPaths, ExponentialIsWithinTwoUlpOfExpf) {
  int64_t worst = 0;
  for (int64_t i = 0; i <= 2000000; ++i) {
    const float x = -87.0f * float(i) / 2000000.0f;
    const float ours = kernels::exp_scalar(x), libm = std::exp(x);
    int32_t a, b;
    std::memcpy(&a, &ours, 4);
    std::memcpy(&b, &libm, 4);
    worst = std::max<int64_t>(worst, std::abs(int64_t(a) - int64_t(b)));
  }
  EXPECT_LE(worst, 2);
}

struct ModelOutputs {
  at::Tensor embedding, masks, iou;
};

ModelOutputs run_artifact(const std::string& path) {
  const auto qsam = quant::load_artifact(path, {quant::Backend::kSimulated});
  sam::Predictor predictor(qsam->model());
  at::manual_seed(5);
  predictor.set_image(at::randint(0, 256, {120, 160, 3}, at::kByte));
  sam::Prompt prompt;
  prompt.box = sam::Box{20, 15, 130, 100};
  const sam::Prediction pred = predictor.predict({prompt}, true, true);
  return {predictor.features().clone(), pred.masks[0], pred.iou[0]};
}

// A small random SAM quantized with the encoder (every kernel of the quantized model: codes,
// exact products, the softmax's exponential and codes, AGQ's planes, GELU) run at the CPU's
// level and at the generic one without VNNI: the same bits.
void expect_same_model_outputs(int bit, bool agq, CpuIsa level = CpuIsa::kGeneric, bool vnni = false) {
  io::StateDict state = sam::random_state_dict(sam::vit_config(64, 2, 2, {1}), 11);
  const auto model = sam::make_sam(state);
  quant::QuantizedSam qsam(model, test::config_of(bit, false, agq), true);
  at::manual_seed(9);
  const at::Tensor image = at::randint(0, 256, {96, 128, 3}, at::kByte);
  quant::calibrate(qsam, 1, [&](size_t) { return quant::CalibrationSample{"synthetic", image, {{10, 10, 90, 70}}}; });
  test::TempDir dir;
  quant::save_artifact(qsam, dir.file("model.safetensors"));
  const ModelOutputs own = run_artifact(dir.file("model.safetensors"));
  const kernels::ScopedCpuLimit generic(level, vnni);
  const ModelOutputs lower = run_artifact(dir.file("model.safetensors"));
  EXPECT_TRUE(same_bits(own.embedding, lower.embedding))
      << "embedding max |diff| " << (own.embedding - lower.embedding).abs().max().item<float>();
  EXPECT_TRUE(same_bits(own.masks, lower.masks));
  EXPECT_TRUE(same_bits(own.iou, lower.iou));
}

TEST(CpuPaths, QuantizedModelW8A8GivesTheSameBitsOnTheGenericLevel) { expect_same_model_outputs(8, false); }
TEST(CpuPaths, QuantizedModelW4A4WithAgqGivesTheSameBitsOnTheGenericLevel) { expect_same_model_outputs(4, true); }

TEST(CpuPaths, UnknownSettingIsAOneLineError) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny");
  const test::CommandResult r = test::run_cli_with_env("PTQ4SAM_CPU=avx9", "segment --model " + fixtures +
                                                      "/sam_tiny/checkpoint.pth --image " + fixtures +
                                                      "/sam_tiny/image.jpg --point 10,10,1 --out /tmp/ptq4sam_cpu_paths");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("PTQ4SAM_CPU='avx9': unknown item 'avx9'"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

}  // namespace
}  // namespace ptq4sam
