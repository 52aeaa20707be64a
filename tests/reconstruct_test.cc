// PTQ4SAM-L: QDrop block reconstruction. AdaRound's rounding and its hardening into codes, the
// seed's loss, the blocks and their order, the loss falling on real blocks of the sam_tiny
// fixture, and a killed run resumed from its checkpoint ending exactly as an uninterrupted one.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "quant/reconstruct.h"
#include "sam/sam.h"
#include "quant_test_support.h"
#include "test_support.h"
#include "util/error.h"
#include "util/heap_settings.h"

namespace ptq4sam {
namespace {

using test::fixture_samples;

quant::ReconConfig short_recon(int iters) {
  quant::ReconConfig c;
  c.iters = iters;
  c.scale_lr = 4e-5;
  c.warm_up = 0.2;
  c.weight = 0.01;
  c.b_range = {20, 2};
  c.drop_prob = 0.5;
  return c;
}

std::unique_ptr<quant::QuantizedSam> calibrated_fixture(const std::string& fixtures, int bit, bool quant_encoder) {
  auto model = sam::load_sam(fixtures + "/sam_tiny/checkpoint.pth");
  // BIG off: its key search dominates calibration time; AGQ on, so its scale learns too.
  auto qsam = std::make_unique<quant::QuantizedSam>(model, test::config_of(bit, false, true), quant_encoder);
  quant::calibrate(*qsam, 2, fixture_samples(fixtures));
  return qsam;
}

quant::ReconBlock& block_named(std::vector<quant::ReconBlock>& blocks, const std::string& name) {
  for (auto& b : blocks)
    if (b.name == name) return b;
  throw Error(name, "no such block");
}

// Every quantizer's learned state: scales, zero points, AGQ's scale and tau, AdaRound masks.
std::map<std::string, at::Tensor> quantizer_state(const quant::QuantizedSam& qsam) {
  std::map<std::string, at::Tensor> state;
  for (const auto& q : qsam.quantizers()) {
    if (const auto* affine = dynamic_cast<const quant::AffineQuantizer*>(q.get())) {
      state[q->name() + ".scale"] = affine->scale().detach().clone();
      state[q->name() + ".zero_point"] = affine->zero_point().clone();
      if (affine->adaround_mask().defined()) state[q->name() + ".adaround"] = affine->adaround_mask();
    } else if (const auto* log = dynamic_cast<const quant::LogQuantizer*>(q.get())) {
      state[q->name() + ".scale"] = at::full({1}, log->scale(), at::kDouble);
      state[q->name() + ".tau"] = at::full({1}, log->tau(), at::kDouble);
    }
  }
  return state;
}

TEST(Reconstruct, LpLossSumsChannelsAndAveragesTheRest) {
  const at::Tensor pred = at::arange(24, at::kFloat).reshape({2, 3, 4});
  const at::Tensor target = at::zeros({2, 3, 4});
  // sum over dim 1 of x^2, then the mean of the 2 x 4 results.
  const double expected = pred.pow(2).sum(1).mean().item<double>();
  EXPECT_DOUBLE_EQ(quant::lp_loss(pred, target).item<double>(), expected);
  EXPECT_NEAR(quant::lp_loss(pred, target).item<double>(), pred.pow(2).sum().item<double>() / 8.0, 1e-3);
}

TEST(Reconstruct, AdaRoundStartsAtTheWeightAndHardensIntoCodes) {
  at::manual_seed(3);
  const at::Tensor weight = at::randn({6, 10});
  quant::AffineQuantizer q("layer.weight_fake_quant", {4, false}, 0, quant::make_observer({"AdaRoundFakeQuantize", "MinMaxObserver", 4, false, 0}),
                           false);
  q.set_mode(quant::QuantMode::kCalibrate);
  q.apply(weight, at::Tensor());
  q.set_mode(quant::QuantMode::kSimulate);
  const at::Tensor nearest = q.quantize_codes(weight);

  const at::Tensor alpha = q.begin_adaround(weight);
  EXPECT_TRUE(alpha.requires_grad());
  // h(alpha) is the fractional part: soft rounding gives the weight back wherever the grid
  // reaches (the rounded zero point may clip the extremes by up to half a step).
  const at::Tensor steps = q.scale().reshape({-1, 1});
  const at::Tensor position = weight / steps + q.zero_point().reshape({-1, 1}).to(at::kFloat);
  const at::Tensor inside = (position >= 0) & (position <= 15);
  ASSERT_GT(inside.sum().item<int64_t>(), 50);
  EXPECT_TRUE(at::allclose(q.fake_quantize(weight).masked_select(inside), weight.masked_select(inside), 1e-4, 1e-5));
  EXPECT_FALSE(q.grid_step().defined());  // soft values are off the grid

  q.harden_adaround();
  const at::Tensor mask = q.adaround_mask();
  ASSERT_TRUE(mask.defined());
  // Initialised from the fractional part, hard rounding is rounding to nearest (up when >= 0.5).
  EXPECT_TRUE(at::equal(q.quantize_codes(weight), nearest));
  EXPECT_TRUE(q.grid_step().defined());

  // Flip every rounding: the codes move by one (within the grid) and survive a mask round trip.
  q.set_adaround_mask(1 - mask);
  const at::Tensor flipped = q.quantize_codes(weight);
  EXPECT_FALSE(at::equal(flipped, nearest));
  EXPECT_LE((flipped - nearest).abs().max().item<int>(), 1);
  const at::Tensor step = q.scale().reshape({-1, 1});
  const at::Tensor zp = q.zero_point().reshape({-1, 1}).to(at::kFloat);
  EXPECT_TRUE(at::allclose(q.fake_quantize(weight), (flipped.to(at::kFloat) - zp) * step));
}

TEST(Reconstruct, BlocksFollowTheSeedsOrder) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny/checkpoint.pth");
  auto model = sam::load_sam(fixtures + "/sam_tiny/checkpoint.pth");
  quant::QuantizedSam qsam(model, test::config_of(8, true, true), true);
  const auto blocks = quant::reconstruction_blocks(qsam);
  // 4 encoder blocks (attention, MLP), the neck, 2 decoder layers of 4 blocks, the final attention.
  ASSERT_EQ(blocks.size(), 4u * 2u + 1u + 2u * 4u + 1u);
  EXPECT_EQ(blocks[0].name, "image_encoder.blocks.0.attn");
  EXPECT_EQ(blocks[1].name, "image_encoder.blocks.0.mlp");
  EXPECT_EQ(blocks[8].name, "image_encoder.neck");
  EXPECT_EQ(blocks[9].name, "mask_decoder.transformer.layers.0.self_attn");
  EXPECT_EQ(blocks[10].name, "mask_decoder.transformer.layers.0.cross_attn_token_to_image");
  EXPECT_EQ(blocks[11].name, "mask_decoder.transformer.layers.0.mlp");
  EXPECT_EQ(blocks[12].name, "mask_decoder.transformer.layers.0.cross_attn_image_to_token");
  EXPECT_EQ(blocks.back().name, "mask_decoder.transformer.final_attn_token_to_image");
  // An encoder attention: qkv and proj weights; their inputs, q, k, v and softmax quantizers.
  EXPECT_EQ(blocks[0].weights.size(), 2u);
  EXPECT_EQ(blocks[0].activations.size(), 6u);
  EXPECT_EQ(blocks[8].weights.size(), 2u);  // the neck's two convolutions
  EXPECT_EQ(blocks[9].weights.size(), 4u);  // q, k, v, out projections
}

// The loss falls on blocks of each kind: encoder window attention and MLP, the neck, decoder
// attention and MLP (W4A4 with AGQ). The decoder attention is the token self-attention (~11% lower
// here). The token-to-image cross attention is left out: in 60 iterations its gain swings with
// the seed from 6% to 0.4%, and a CI machine's different float rounding saw it rise (and revert).
TEST(Reconstruct, BlockErrorFallsBelowCalibration) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny/checkpoint.pth");
  auto qsam = calibrated_fixture(fixtures, 4, true);
  auto blocks = quant::reconstruction_blocks(*qsam);
  for (const std::string name : {"image_encoder.blocks.0.attn", "image_encoder.blocks.0.mlp", "image_encoder.neck",
                                 "mask_decoder.transformer.layers.0.self_attn", "mask_decoder.transformer.layers.0.mlp"}) {
    quant::ReconBlock& block = block_named(blocks, name);
    quant::BlockData data(true, 0);
    quant::collect_block_data(*qsam, block, 2, fixture_samples(fixtures), data);
    ASSERT_EQ(data.size(), 2u);
    const auto result = quant::reconstruct_block(block, data, short_recon(60), 7);
    EXPECT_GT(result.mse_before, 0.0) << name;
    EXPECT_LT(result.mse_after, result.mse_before) << name;
    // Hardened: simulating again gives the same error, with drop off for good.
    EXPECT_DOUBLE_EQ(quant::block_mse(block, data), result.mse_after) << name;
    for (const auto& q : block.activations) EXPECT_EQ(q->drop_prob(), 1.0) << q->name();
    for (const auto& w : block.weights) EXPECT_TRUE(w.quantizer->adaround_mask().defined()) << w.quantizer->name();
  }
}

// Training that makes a block worse (here an absurd scale learning rate) is undone: the block
// goes back to its calibrated scales and nearest rounding, unless keep_worse asks for the
// seed's behaviour.
TEST(Reconstruct, BlockMadeWorseGoesBackToCalibration) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny/checkpoint.pth");
  quant::ReconConfig wild = short_recon(20);
  wild.scale_lr = 1.0;
  auto qsam = calibrated_fixture(fixtures, 4, false);
  auto blocks = quant::reconstruction_blocks(*qsam);
  quant::ReconBlock& block = block_named(blocks, "mask_decoder.transformer.layers.0.mlp");
  quant::BlockData data(true, 0);
  quant::collect_block_data(*qsam, block, 2, fixture_samples(fixtures), data);
  const auto calibrated = quantizer_state(*qsam);
  std::vector<at::Tensor> nearest_codes;
  for (const auto& w : block.weights) nearest_codes.push_back(w.quantizer->quantize_codes(w.weight));

  const auto reverted = quant::reconstruct_block(block, data, wild, 7);
  ASSERT_GT(reverted.mse_trained, reverted.mse_before);
  EXPECT_TRUE(reverted.reverted);
  EXPECT_NEAR(reverted.mse_after, reverted.mse_before, 1e-9 * reverted.mse_before);
  const auto restored = quantizer_state(*qsam);
  for (const auto& [name, tensor] : calibrated) EXPECT_TRUE(at::equal(restored.at(name), tensor)) << name;
  for (size_t i = 0; i < block.weights.size(); ++i)
    EXPECT_TRUE(at::equal(block.weights[i].quantizer->quantize_codes(block.weights[i].weight), nearest_codes[i]))
        << block.weights[i].quantizer->name();

  // From the same calibrated state, the seed's behaviour keeps the worse result.
  const auto kept = quant::reconstruct_block(block, data, wild, 7, /*keep_worse=*/true);
  EXPECT_FALSE(kept.reverted);
  EXPECT_EQ(kept.mse_trained, reverted.mse_trained);
  EXPECT_EQ(kept.mse_after, kept.mse_trained);
}

TEST(Reconstruct, ResultJsonRoundTrips) {
  quant::ReconBlockResult r;
  r.block = "image_encoder.neck";
  r.mse_before = 2.5;
  r.mse_trained = 3.0;
  r.mse_after = 2.5;
  r.reverted = true;
  r.seconds = 12.0;
  r.seconds_per_iter = 0.06;
  const quant::ReconBlockResult back = quant::recon_result_from_json(quant::to_json(r));
  EXPECT_EQ(back.block, r.block);
  EXPECT_EQ(back.mse_trained, 3.0);
  EXPECT_TRUE(back.reverted);
  EXPECT_EQ(back.seconds_per_iter, 0.06);
  EXPECT_THROW(quant::recon_result_from_json(nlohmann::json{{"block", "x"}}), nlohmann::json::exception);
}

TEST(Reconstruct, HeapSettingsComeBackAsTheyWere) {
  // Reconstruction keeps freed memory in the heap while it runs, then must put back whatever
  // the process had chosen (the CLI's own settings), not glibc's defaults.
  const HeapSettings original = heap_settings();
  HeapSettings chosen = original;
  chosen.trim_threshold = 1 << 30;
  chosen.mmap_max = 0;
  set_heap_settings(chosen);
  {
    HeapSettings inner = chosen;
    inner.trim_threshold = -1;
    const ScopedHeapSettings scope(inner);
    EXPECT_EQ(heap_settings().trim_threshold, -1);
  }
  EXPECT_EQ(heap_settings().trim_threshold, 1 << 30);
  EXPECT_EQ(heap_settings().mmap_max, 0);
  set_heap_settings(original);
  EXPECT_EQ(heap_settings().trim_threshold, original.trim_threshold);
}

TEST(Reconstruct, SpilledDataReadsBackAsKept) {
  quant::BlockData data(false, 1000);  // about one small entry in memory, the rest on disk
  std::vector<quant::BlockData::Entry> kept;
  for (int i = 0; i < 3; ++i) {
    quant::BlockData::Entry e;
    e.quant_inputs = {at::randn({4, 8}), at::randn({2, 8})};
    e.fp_inputs = {at::randn({4, 8}), at::randn({2, 8})};
    e.fp_output = at::randn({4, 8});
    kept.push_back(e);
    data.add(e);
  }
  EXPECT_GE(data.spilled(), 2u);
  for (size_t i = 0; i < 3; ++i) {
    const auto e = data.get(i, at::kCPU);
    ASSERT_EQ(e.quant_inputs.size(), 2u);
    EXPECT_TRUE(at::equal(e.quant_inputs[1], kept[i].quant_inputs[1]));
    EXPECT_TRUE(at::equal(e.fp_inputs[0], kept[i].fp_inputs[0]));
    EXPECT_TRUE(at::equal(e.fp_output, kept[i].fp_output));
  }
}

// A run stopped after 3 blocks and started again ends with exactly the quantizers of an
// uninterrupted run with the same seed; another run's checkpoint is refused.
TEST(Reconstruct, ResumedRunEndsIdentical) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny/checkpoint.pth");
  test::TempDir dir;
  quant::ReconOptions options;
  options.config = short_recon(6);
  options.seed = 11;
  options.fingerprint = "run-a";

  auto whole = calibrated_fixture(fixtures, 4, false);
  const auto whole_results = quant::reconstruct(*whole, 2, fixture_samples(fixtures), options);
  ASSERT_EQ(whole_results.size(), 9u);
  for (const auto& r : whole_results) EXPECT_FALSE(r.resumed);

  options.checkpoint = dir.file("recon.safetensors");
  options.stop_after = 3;
  auto killed = calibrated_fixture(fixtures, 4, false);
  EXPECT_EQ(quant::reconstruct(*killed, 2, fixture_samples(fixtures), options).size(), 3u);
  ASSERT_TRUE(std::filesystem::exists(options.checkpoint));

  options.stop_after = std::numeric_limits<size_t>::max();
  auto resumed = calibrated_fixture(fixtures, 4, false);
  const auto resumed_results = quant::reconstruct(*resumed, 2, fixture_samples(fixtures), options);
  ASSERT_EQ(resumed_results.size(), 9u);
  for (size_t b = 0; b < 9; ++b) {
    EXPECT_EQ(resumed_results[b].resumed, b < 3) << b;
    EXPECT_EQ(resumed_results[b].mse_after, whole_results[b].mse_after) << resumed_results[b].block;
  }
  const auto expected = quantizer_state(*whole), actual = quantizer_state(*resumed);
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, tensor] : expected) {
    ASSERT_TRUE(actual.count(name)) << name;
    EXPECT_TRUE(at::equal(actual.at(name), tensor)) << name;
  }

  options.fingerprint = "run-b";
  auto other = calibrated_fixture(fixtures, 4, false);
  try {
    quant::reconstruct(*other, 2, fixture_samples(fixtures), options);
    FAIL() << "another run's checkpoint was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint of another run"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ptq4sam
