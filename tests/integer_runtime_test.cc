// The integer runtime against the simulated (fake-quant) model it stands for, at W8A8, W6A6 and
// W4A4, on the fixture and on a random ViT-B-shaped model: the image embedding within one
// quantization step of the neck, binary masks agreeing on >= 99.5% of pixels.
#include <gtest/gtest.h>

#include <cstdio>

#include "io/image.h"
#include "quant/artifact.h"
#include "quant/calibrate.h"
#include "sam/predictor.h"
#include "sam/random_weights.h"
#include "quant_test_support.h"
#include "test_support.h"

namespace ptq4sam {
namespace {

struct Agreement {
  double max_diff = 0, mean_diff = 0;  // |integer - simulated| over the image embedding
  double step = 0;                     // the scale of the neck's last input quantizer
  double mask_agreement = 0;           // fraction of equal pixels over all masks
};

struct Outputs {
  at::Tensor embedding, masks;
};

Outputs run(const quant::QuantizedSam& qsam, const at::Tensor& image, const std::vector<sam::Prompt>& prompts) {
  sam::Predictor predictor(qsam.model());
  predictor.set_image(image);
  return {predictor.features().clone(), predictor.predict(prompts, true).masks};
}

// Loads `artifact` both ways and runs both on the image; expects every quantized layer on codes.
Agreement compare_backends(const std::string& artifact, const at::Tensor& image, const std::vector<sam::Prompt>& prompts) {
  Outputs simulated, integer;
  double step = 0;
  {
    const auto qsam = quant::load_artifact(artifact, {quant::Backend::kSimulated});
    simulated = run(*qsam, image, prompts);
    const auto neck = std::static_pointer_cast<quant::AffineQuantizer>(
        qsam->find("image_encoder.neck.2.layer_pre_act_fake_quantize"));
    if (neck) step = neck->scale()[0].item<double>();
  }
  {
    const auto qsam = quant::load_artifact(artifact, {quant::Backend::kInteger, true});
    EXPECT_EQ(qsam->integer_layers().names.size(), qsam->layer_sites().size());
    EXPECT_TRUE(qsam->integer_layers().fallback.empty());
    integer = run(*qsam, image, prompts);
  }
  const at::Tensor diff = (integer.embedding - simulated.embedding).abs();
  Agreement a;
  a.max_diff = diff.max().item<double>();
  a.mean_diff = diff.mean().item<double>();
  a.step = step;
  a.mask_agreement = integer.masks.eq(simulated.masks).to(at::kDouble).mean().item<double>();
  std::printf("integer vs simulated: embedding max |diff| %.3g, mean %.3g (neck step %.3g); masks agree on %.4f%%\n",
              a.max_diff, a.mean_diff, a.step, 100.0 * a.mask_agreement);
  return a;
}

// Both backends sum the same codes exactly and share every output pass, rounded alike (no
// fused multiply-add either side): the same bits.
void expect_faithful(const Agreement& a) {
  ASSERT_GT(a.step, 0.0);
  EXPECT_EQ(a.max_diff, 0.0);
  EXPECT_EQ(a.mask_agreement, 1.0);
}

#define PTQ4SAM_REQUIRE_EXACT_INTEGER_MATMUL()                                                 \
  if (!kernels::integer_matmul_exact())                                                        \
    GTEST_SKIP() << "this CPU has no VNNI: the integer runtime falls back to the simulated one " \
                    "(IntegerRuntime.FallsBackWithoutVnni covers that)";

std::vector<sam::Prompt> boxes(const std::vector<sam::Box>& list) {
  std::vector<sam::Prompt> prompts;
  for (const auto& b : list) {
    sam::Prompt p;
    p.box = b;
    prompts.push_back(p);
  }
  return prompts;
}

// The fixture calibrated on one sample, encoder included, saved. AGQ's log quantizer (its
// search costs a minute here) only at 4 bits: the attention runs the same code in both backends.
std::string fixture_artifact(const std::string& fixtures, int bit, const test::TempDir& dir) {
  auto model = sam::load_sam(fixtures + "/sam_tiny/checkpoint.pth");
  quant::QuantizedSam qsam(model, test::config_of(bit, false, bit == 4), true);
  quant::calibrate(qsam, 1, test::fixture_samples(fixtures));
  qsam.set_mode(quant::QuantMode::kSimulate);
  const std::string path = dir.file("w" + std::to_string(bit) + ".safetensors");
  quant::save_artifact(qsam, path);
  return path;
}

void fixture_case(int bit) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny");
  PTQ4SAM_REQUIRE_EXACT_INTEGER_MATMUL();
  test::TempDir dir;
  const std::string artifact = fixture_artifact(fixtures, bit, dir);
  const at::Tensor image = io::read_image_rgb(fixtures + "/sam_tiny/image.jpg");
  expect_faithful(compare_backends(artifact, image, boxes({{100, 80, 420, 400}, {300, 150, 760, 500}, {20, 20, 200, 300}})));
}

TEST(IntegerRuntime, FixtureW8A8) { fixture_case(8); }
TEST(IntegerRuntime, FixtureW6A6) { fixture_case(6); }
TEST(IntegerRuntime, FixtureW4A4) { fixture_case(4); }

// A random ViT-B-shaped model calibrated on one synthetic picture (uniform softmax quantizers:
// the attention runs the same code in both backends, and AGQ's search costs minutes here).
void vit_b_case(int bit) {
  PTQ4SAM_REQUIRE_EXACT_INTEGER_MATMUL();
  test::TempDir dir;
  at::manual_seed(3);
  const at::Tensor image = at::randint(0, 256, {600, 800, 3}, at::kByte);
  const std::vector<sam::Box> box_list = {{50, 40, 400, 300}, {300, 200, 780, 590}};
  std::string artifact = dir.file("vit_b.safetensors");
  {
    io::StateDict state = sam::random_state_dict(sam::vit_b_config(), 7);
    quant::QuantizedSam qsam(sam::make_sam(state), test::config_of(bit, false, false), true);
    quant::calibrate(qsam, 1, [&](size_t) { return quant::CalibrationSample{"synthetic", image, box_list}; });
    qsam.set_mode(quant::QuantMode::kSimulate);
    quant::save_artifact(qsam, artifact);
  }
  expect_faithful(compare_backends(artifact, image, boxes(box_list)));
}

TEST(IntegerRuntime, VitBW8A8) { vit_b_case(8); }
TEST(IntegerRuntime, VitBW6A6) { vit_b_case(6); }
TEST(IntegerRuntime, VitBW4A4) { vit_b_case(4); }

// Without an exact integer product every layer stays simulated, named, and the numbers are the
// simulated ones.
TEST(IntegerRuntime, FallsBackWithoutVnni) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny");
  test::TempDir dir;
  const std::string artifact = fixture_artifact(fixtures, 8, dir);
  const auto qsam = quant::load_artifact(artifact, {quant::Backend::kInteger, false});
  EXPECT_TRUE(qsam->integer_layers().names.empty());
  ASSERT_EQ(qsam->integer_layers().fallback.size(), qsam->layer_sites().size());
  EXPECT_EQ(qsam->integer_layers().fallback.front(), qsam->layer_sites().front().name);
  EXPECT_NE(qsam->integer_layers().fallback_reason.find("VNNI"), std::string::npos);
  const auto simulated = quant::load_artifact(artifact, {quant::Backend::kSimulated});
  const at::Tensor image = io::read_image_rgb(fixtures + "/sam_tiny/image.jpg");
  const auto prompts = boxes({{100, 80, 420, 400}});
  EXPECT_TRUE(at::equal(run(*qsam, image, prompts).embedding, run(*simulated, image, prompts).embedding));
}

// A tap (block reconstruction's) sees an integer attention apart from its residual: forward with
// a tap set runs the same codes as the block's own path, which adds the residual in proj's
// output pass, and hands the tap its input and output.
TEST(IntegerRuntime, TappedAttentionIsTheBlocksWithoutTheResidual) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny");
  PTQ4SAM_REQUIRE_EXACT_INTEGER_MATMUL();
  test::TempDir dir;
  const auto qsam = quant::load_artifact(fixture_artifact(fixtures, 8, dir), {quant::Backend::kInteger, true});
  const torch::NoGradGuard no_grad;
  for (const auto& block : qsam->model()->image_encoder->blocks) {
    sam::EncoderAttention& attn = *block->attn;
    ASSERT_TRUE(attn.on_codes());
    const int64_t side = block->window_size > 0 ? block->window_size : 5;
    const at::Tensor x = at::randn({2, side, side, qsam->model()->image_encoder->config.embed_dim});
    const at::Tensor with_residual = attn.forward_on_codes(x, 0, x);
    at::Tensor seen_input, seen_output;
    attn.tap = [&](const std::vector<at::Tensor>& inputs, const at::Tensor& output) {
      seen_input = inputs.at(0);
      seen_output = output;
    };
    const at::Tensor tapped = attn.forward(x);
    attn.tap = nullptr;
    ASSERT_TRUE(seen_output.defined());
    EXPECT_TRUE(at::equal(seen_input, x));
    EXPECT_TRUE(at::equal(seen_output, tapped));
    EXPECT_TRUE(at::allclose(tapped + x, with_residual, 1e-5, 1e-5)) << (tapped + x - with_residual).abs().max();
  }
}

// The int4 codes stay packed two per byte: the integer model of a W4A4 artifact holds about an
// eighth of the float32 bytes for its quantized layers, and the position embedding in half.
TEST(IntegerRuntime, Int4WeightsStayPacked) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny");
  test::TempDir dir;
  const std::string artifact = fixture_artifact(fixtures, 4, dir);
  const auto qsam = quant::load_artifact(artifact, {quant::Backend::kInteger, true});
  const auto model = sam::load_sam(fixtures + "/sam_tiny/checkpoint.pth");
  int64_t float_bytes = 0, code_bytes = 0;
  for (const auto& site : qsam->layer_sites()) {
    ASSERT_TRUE(site.points->integer) << site.name;
    const auto& w = site.points->integer->weight;
    float_bytes += 4 * w.in_features * w.out_features();
    code_bytes += w.resident_bytes() - 4 * 3 * w.out_features() - (w.bias.defined() ? 4 * w.out_features() : 0);
    // The float weight is gone: one element of storage stands in for it.
    EXPECT_LE(qsam->model()->named_parameters()[site.name + ".weight"].storage().nbytes(), 4u) << site.name;
  }
  EXPECT_LE(double(code_bytes), 1.1 * double(float_bytes) / 8.0);
  // The position embedding, float32 in the seed, is held as its float16 rounding.
  const at::Tensor& pos_embed = qsam->model()->image_encoder->pos_embed;
  EXPECT_EQ(pos_embed.scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(pos_embed, model->image_encoder->pos_embed.to(at::kHalf)));
}

}  // namespace
}  // namespace ptq4sam

