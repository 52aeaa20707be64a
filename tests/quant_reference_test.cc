// The quantizers and observers against the seed's own outputs
// ($PTQ4SAM_FIXTURES/quant/reference.json): inputs and expected values come from the file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "quant/adaround.h"
#include "quant/bimodal.h"
#include "quant/observer.h"
#include "test_support.h"

namespace ptq4sam {
namespace {

using nlohmann::json;

at::Tensor to_tensor(const json& j) {
  if (!j.is_array()) return at::full({}, j.get<double>(), at::kFloat);
  std::vector<at::Tensor> rows;
  for (const auto& e : j) rows.push_back(to_tensor(e));
  return rows.empty() ? at::empty({0}, at::kFloat) : at::stack(rows);
}

void expect_close(const at::Tensor& actual, const json& expected, double rel, const std::string& what,
                  double abs_tol = 1e-7) {
  const at::Tensor e = to_tensor(expected).to(at::kDouble);
  const at::Tensor a = actual.to(at::kDouble).reshape(e.sizes());
  const double err = ((a - e).abs() / (e.abs() + 1e-12)).max().item<double>();
  const double abs_err = (a - e).abs().max().item<double>();
  EXPECT_TRUE(err <= rel || abs_err <= abs_tol) << what << ": max relative error " << err << ", absolute " << abs_err;
}

std::vector<json> cases_of(const std::string& fixtures, const std::string& kind) {
  const json all = json::parse(test::read_bytes(fixtures + "/quant/reference.json"));
  std::vector<json> out;
  for (const auto& c : all["cases"])
    if (c["kind"] == kind) out.push_back(c);
  return out;
}

quant::QuantRange range_of(const json& c) { return {c["bit"].get<int>(), c.value("symmetric", false)}; }

TEST(QuantReference, MinMaxPerTensorAndFakeQuant) {
  PTQ4SAM_REQUIRE_FIXTURES("quant");
  const auto cases = cases_of(fixtures, "minmax_per_tensor");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const quant::QuantRange range = range_of(c);
    EXPECT_EQ(range.quant_min(), c["quant_min"].get<int64_t>());
    EXPECT_EQ(range.quant_max(), c["quant_max"].get<int64_t>());
    quant::MinMaxObserver observer(range, -1);
    const at::Tensor x = to_tensor(c["x"]);
    observer.observe(x);
    const auto [scale, zero_point] = observer.qparams();
    expect_close(scale, c["scale"], 1e-5, "scale");
    EXPECT_EQ(zero_point.item<int64_t>(), c["zero_point"].get<int64_t>());
    expect_close(quant::fake_quantize(x, scale, zero_point, range), c["fake_quant"], 1e-5, "fake_quant");
  }
}

TEST(QuantReference, MinMaxPerChannel) {
  PTQ4SAM_REQUIRE_FIXTURES("quant");
  const auto cases = cases_of(fixtures, "minmax_per_channel");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const quant::QuantRange range = range_of(c);
    const int64_t axis = c["ch_axis"].get<int64_t>();
    quant::MinMaxObserver observer(range, axis);
    const at::Tensor x = to_tensor(c["x"]);
    observer.observe(x);
    const auto [scale, zero_point] = observer.qparams();
    expect_close(scale, c["scale"], 1e-5, "scale");
    EXPECT_TRUE(at::equal(zero_point.to(at::kLong), to_tensor(c["zero_point"]).to(at::kLong)));
    expect_close(quant::fake_quantize_per_channel(x, scale, zero_point, axis, range), c["fake_quant"], 1e-5, "fake_quant");
  }
}

TEST(QuantReference, AverageMinMaxOverBatches) {
  PTQ4SAM_REQUIRE_FIXTURES("quant");
  const auto cases = cases_of(fixtures, "avg_minmax");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    quant::AvgMinMaxObserver observer(range_of(c));
    for (const auto& batch : c["batches"]) observer.observe(to_tensor(batch));
    expect_close(observer.min_val(), c["min_val"], 1e-6, "min_val");
    expect_close(observer.max_val(), c["max_val"], 1e-6, "max_val");
    const auto [scale, zero_point] = observer.qparams();
    expect_close(scale, c["scale"], 1e-5, "scale");
    EXPECT_EQ(zero_point.item<int64_t>(), c["zero_point"].get<int64_t>());
  }
}

TEST(QuantReference, MseGridSearchPerChannel) {
  PTQ4SAM_REQUIRE_FIXTURES("quant");
  const auto cases = cases_of(fixtures, "mse_per_channel");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    quant::MseObserver observer(range_of(c), 0);
    observer.observe(to_tensor(c["x"]));
    expect_close(observer.min_val(), c["min_val"], 1e-5, "min_val");
    expect_close(observer.max_val(), c["max_val"], 1e-5, "max_val");
    const auto [scale, zero_point] = observer.qparams();
    expect_close(scale, c["scale"], 1e-5, "scale");
    EXPECT_TRUE(at::equal(zero_point.to(at::kLong), to_tensor(c["zero_point"]).to(at::kLong)));
  }
}

TEST(QuantReference, AdaRoundInitialisation) {
  PTQ4SAM_REQUIRE_FIXTURES("quant");
  const auto cases = cases_of(fixtures, "adaround");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const quant::QuantRange range = range_of(c);
    const quant::AdaRoundParams p{c["gamma"].get<double>(), c["zeta"].get<double>()};
    const at::Tensor w = to_tensor(c["x"]), scale = to_tensor(c["scale"]), zp = to_tensor(c["zero_point"]);
    const at::Tensor alpha = quant::adaround_init_alpha(w, scale, p);
    expect_close(alpha, c["alpha"], 1e-4, "alpha");
    // Values in [0, 1]: a float32 ulp of alpha moves them by ~1e-7 absolute.
    expect_close(quant::rectified_sigmoid(alpha, p), c["rectified_sigmoid"], 1e-5, "rectified_sigmoid", 1e-6);
    expect_close(quant::adaround_quantize(w, scale, zp, alpha, range, false, p), c["soft"], 1e-5, "soft");
    expect_close(quant::adaround_quantize(w, scale, zp, alpha, range, true, p), c["hard"], 1e-5, "hard");
  }
}

// One-sided data: one bounded Brent search of the range per batch; two-sided: a search of the
// range over inner searches of the shift.
TEST(QuantReference, AvgMseFastBrentSearch) {
  PTQ4SAM_REQUIRE_FIXTURES("quant");
  for (const char* kind : {"avg_mse_fast_one_sided", "avg_mse_fast"}) {
    const auto cases = cases_of(fixtures, kind);
    ASSERT_FALSE(cases.empty()) << kind;
    for (const auto& c : cases) {
      SCOPED_TRACE(std::string(kind) + " bit " + std::to_string(c["bit"].get<int>()));
      quant::MseFastObserver observer(range_of(c));
      for (const auto& batch : c["batches"]) observer.observe(to_tensor(batch));
      expect_close(observer.min_val(), c["min_val"], 1e-5, "min_val");
      expect_close(observer.max_val(), c["max_val"], 1e-5, "max_val");
      const auto [scale, zero_point] = observer.qparams();
      expect_close(scale, c["scale"], 1e-5, "scale");
      EXPECT_EQ(zero_point.item<int64_t>(), c["zero_point"].get<int64_t>());
    }
  }
}

TEST(QuantReference, AgqChoosesTauAndScale) {
  PTQ4SAM_REQUIRE_FIXTURES("quant");
  const auto cases = cases_of(fixtures, "agq");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE("bit " + std::to_string(c["bit"].get<int>()));
    const quant::QuantRange range{c["bit"].get<int>(), false};
    std::vector<double> taus;
    for (const auto& t : c["taus"]) taus.push_back(t.get<double>());
    quant::AgqObserver observer(range, taus);
    for (size_t b = 0; b < c["attn"].size(); ++b) observer.observe(to_tensor(c["attn"][b]), to_tensor(c["value"][b]));
    expect_close(at::tensor(observer.tau_scales(), at::kDouble), c["best_tau_scales"], 1e-5, "best_tau_scales");
    expect_close(at::tensor(observer.tau_errors(), at::kDouble), c["tau_errors"], 1e-4, "tau_errors");
    EXPECT_EQ(observer.tau(), c["tau"].get<double>());
    expect_close(at::full({}, observer.scale(), at::kDouble), c["scale"], 1e-5, "scale");
    const at::Tensor q = quant::fake_log_quantize(to_tensor(c["attn"][0]), observer.scale(), range, observer.tau());
    expect_close(q, c["fake_quant_attn0"], 1e-5, "fake_quant_attn0");
  }
}

// BIG's detector: KDE + find_peaks decisions and the channel signs, exactly.
TEST(QuantReference, BimodalDetection) {
  PTQ4SAM_REQUIRE_FIXTURES("quant");
  const auto cases = cases_of(fixtures, "bimodal");
  ASSERT_EQ(cases.size(), 3u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    quant::BimodalConfig config;
    config.global_num = c["global_num"].get<int>();
    config.peak_distance = c["peak_distance"].get<int>();
    config.peak_height = c["peak_height"].get<double>();
    const auto decision = quant::detect_bimodal(to_tensor(c["x"]), config);
    EXPECT_EQ(decision.bimodal, c["is_bimodal"].get<bool>()) << decision.peaks << " peaks";
    if (c["sign"].is_null()) {
      EXPECT_FALSE(decision.sign.defined());
    } else {
      ASSERT_TRUE(decision.sign.defined());
      EXPECT_TRUE(at::equal(decision.sign.to(at::kLong), to_tensor(c["sign"]).to(at::kLong)));
    }
  }
}

TEST(Bimodal, FindPeaksKeepsTheHigherOfTwoClosePeaksAndAPlateauMiddle) {
  // Peaks at 2 (height 3), 4 (height 5) and a plateau 8..10 (height 4).
  const std::vector<double> y = {0, 1, 3, 1, 5, 1, 0, 1, 4, 4, 4, 0};
  EXPECT_EQ(quant::find_peaks(y, 0.0, 1), (std::vector<int>{2, 4, 9}));
  EXPECT_EQ(quant::find_peaks(y, 0.0, 3), (std::vector<int>{4, 9}));
  EXPECT_EQ(quant::find_peaks(y, 4.5, 1), (std::vector<int>{4}));
}

TEST(FakeQuant, RoundsHalfToEvenAndPassesGradientsStraightThrough) {
  const at::Tensor x = at::tensor({0.5f, 1.5f, 2.5f, -0.5f, 100.0f}).requires_grad_();
  const quant::QuantRange range{4, true};  // [-8, 7]
  const at::Tensor y = quant::fake_quantize(x, at::ones({}), at::zeros({}), range);
  EXPECT_TRUE(at::equal(y.detach(), at::tensor({0.0f, 2.0f, 2.0f, -0.0f, 7.0f})));
  y.sum().backward();
  // Round passes the gradient through; the clamp stops it outside the grid.
  EXPECT_TRUE(at::equal(x.grad(), at::tensor({1.0f, 1.0f, 1.0f, 1.0f, 0.0f})));
}

TEST(FakeQuant, LogQuantizerCodes) {
  const quant::QuantRange range{2, false};  // codes 0..3
  const at::Tensor a = at::tensor({1.0f, 0.5f, 0.25f, 0.01f});
  // tau = 1: 1 -> 2^0, 0.5 -> 2^-1, 0.25 -> 2^-2; 0.01 -> code 7 >= 4 levels -> 0.
  const at::Tensor q = quant::fake_log_quantize(a, 1.0, range, 1.0);
  EXPECT_TRUE(at::allclose(q, at::tensor({1.0f, 0.5f, 0.25f, 0.0f})));
}

// The fused bit-level log quantizer against the seed's expression (log2 by ATen) on many
// magnitudes: codes may differ only where log2 rounds within an ulp of a rounding threshold.
TEST(FakeQuant, FusedLogQuantizerMatchesTheSeedsExpression) {
  at::manual_seed(3);
  const at::Tensor a = at::softmax(at::randn({64, 4096}) * 3.0, -1);
  for (const double tau : {1.0, 2.0, 4.0}) {
    for (const int bit : {4, 6, 8}) {
      const quant::QuantRange range{bit, false};
      const at::Tensor fused = quant::fake_log_quantize(a, 0.37, range, tau);
      at::Tensor seed;
      {
        // requires_grad takes the seed's differentiable path.
        const at::Tensor x = a.clone().requires_grad_();
        seed = quant::fake_log_quantize(x, 0.37, range, tau).detach();
      }
      const double mismatched = (fused != seed).sum().item<double>() / double(a.numel());
      EXPECT_LT(mismatched, 1e-5) << "tau " << tau << " bit " << bit;
      EXPECT_GT(fused.count_nonzero().item<int64_t>(), 0);
    }
  }
}

// The seed's MSE grid written out candidate by candidate (ATen ops, as in observer.py) against
// the fused search: the same ranges, or ranges whose losses tie within 1e-6.
TEST(MseGridSearch, FusedSearchFindsTheSeedsGridMinimum) {
  at::manual_seed(5);
  at::Tensor w = at::randn({6, 96}) * 0.05;
  w[1] = at::rand({96}) * 0.1;  // one-sided channel: the grid is widened to include 0
  w[2] = at::zeros({96});       // degenerate channel
  w[3][7] = 0.9;                // outlier
  for (const int bit : {3, 4}) {
    SCOPED_TRACE("bit " + std::to_string(bit));
    const quant::QuantRange range{bit, false};
    quant::MseObserver observer(range, 0);
    observer.observe(w);
    const int64_t qmin = range.quant_min(), qmax = range.quant_max();
    const at::Tensor x_min = at::minimum(std::get<0>(w.min(1)), at::zeros({6}));
    const at::Tensor x_max = at::maximum(std::get<0>(w.max(1)), at::zeros({6}));
    const auto loss_of = [&](const at::Tensor& lo, const at::Tensor& hi) {
      const auto [scale, zp] = quant::calculate_qparams(lo, hi, range);
      const at::Tensor q = quant::fake_quantize_per_channel(w, scale, zp.to(at::kInt), 0, range);
      return (q - w).abs().pow(2.4).mean(1);
    };
    at::Tensor best = at::full({6}, 1e10f);
    for (int i = 1; i <= 100; ++i) {
      const at::Tensor tmp_max = (x_max - x_min) / 100 * i;
      const at::Tensor delta = tmp_max / double(qmax - qmin);
      for (int64_t zp = qmin; zp <= qmax; ++zp) best = at::minimum(best, loss_of(-zp * delta, tmp_max - zp * delta));
    }
    const at::Tensor found = loss_of(observer.min_val(), observer.max_val());
    EXPECT_TRUE(at::allclose(found, best, 1e-6, 1e-12)) << found << best;
  }
}

}  // namespace
}  // namespace ptq4sam
