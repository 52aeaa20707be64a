// oneDNN implementation of the float32 matmuls. Primitives are cached by shape, strides and
// post-op, following oneDNN's examples: building a primitive costs far more than running a
// small one, and the same shapes recur in every block.
#include <dnnl.hpp>

#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/cpu_isa.h"
#include "kernels/onednn.h"
#include "kernels/thread_scratch.h"
#include "util/error.h"

namespace ptq4sam::kernels {

dnnl::engine& cpu_engine() {
  // PTQ4SAM_CPU caps oneDNN's ISA, which only holds before its first primitive.
  static dnnl::engine engine = (cpu_isa(), dnnl::engine(dnnl::engine::kind::cpu, 0));
  return engine;
}

void execute(const dnnl::primitive& primitive, std::unordered_map<int, dnnl::memory>& args,
             const dnnl::memory::desc& scratchpad) {
  if (const size_t bytes = scratchpad.get_size(); bytes > 0)
    args.insert_or_assign(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratchpad, cpu_engine(),
                                                            thread_scratch_bytes(Scratch::kOnednnScratchpad, int64_t(bytes))));
  dnnl::stream stream(cpu_engine());
  primitive.execute(stream, args);
  stream.wait();
}

namespace {

using dnnl::memory;

memory::desc desc2d(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  return memory::desc({rows, cols}, memory::data_type::f32, {row_stride, col_stride});
}

struct MatmulKey {
  int64_t m, k, n, a_rs, a_cs, b_rs, b_cs, c_rs, c_cs;
  bool bias;
  int activation;
  float alpha;
  std::string str() const {
    std::ostringstream s;
    s << m << ',' << k << ',' << n << ',' << a_rs << ',' << a_cs << ',' << b_rs << ',' << b_cs << ',' << c_rs
      << ',' << c_cs << ',' << bias << ',' << activation << ',' << alpha;
    return s.str();
  }
};

// A primitive and the scratchpad it asks for. Scratchpads are the caller's (user mode), so
// that several threads may run the same primitive at once (attention heads in parallel).
struct CachedMatmul {
  dnnl::matmul primitive;
  memory::desc scratchpad;
};

CachedMatmul cached_primitive(const MatmulKey& key) {
  static std::mutex mutex;
  static std::unordered_map<std::string, CachedMatmul> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  const std::string id = key.str();
  auto it = cache.find(id);
  if (it != cache.end()) return it->second;
  const auto a = desc2d(key.m, key.k, key.a_rs, key.a_cs);
  const auto b = desc2d(key.k, key.n, key.b_rs, key.b_cs);
  const auto c = desc2d(key.m, key.n, key.c_rs, key.c_cs);
  const auto bias = key.bias ? desc2d(1, key.n, key.n, 1) : memory::desc();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (key.alpha != 1.0f) attr.set_output_scales(0, {key.alpha});
  if (key.activation != int(Activation::kNone)) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f,
                       key.activation == int(Activation::kGelu) ? dnnl::algorithm::eltwise_gelu_erf
                                                                : dnnl::algorithm::eltwise_relu,
                       0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  const dnnl::matmul::desc desc(a, b, bias, c);
  const dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
  if (cache.size() > 4096) cache.clear();  // shapes of a long eval run with varying batch sizes
  return cache.emplace(id, CachedMatmul{dnnl::matmul(pd), pd.scratchpad_desc()}).first->second;
}

void run_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, const at::Tensor& out,
                Activation activation, float alpha) {
  const MatmulKey key{a.size(0), a.size(1), b.size(1), a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                      out.stride(0), out.stride(1), bias.defined(), int(activation), alpha};
  const CachedMatmul cached = cached_primitive(key);
  auto& engine = cpu_engine();
  const auto mem = [&](const at::Tensor& t, int64_t rows, int64_t cols) {
    return memory(desc2d(rows, cols, t.stride(0), t.stride(1)), engine, const_cast<float*>(t.data_ptr<float>()));
  };
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, mem(a, key.m, key.k)},
                                       {DNNL_ARG_WEIGHTS, mem(b, key.k, key.n)},
                                       {DNNL_ARG_DST, mem(out, key.m, key.n)}};
  if (bias.defined())
    args.emplace(DNNL_ARG_BIAS, memory(desc2d(1, key.n, key.n, 1), engine, const_cast<float*>(bias.data_ptr<float>())));
  execute(cached.primitive, args, cached.scratchpad);
}

}  // namespace

bool needs_autograd(const at::Tensor& a, const at::Tensor& b) {
  return at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad());
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, Activation activation,
                  Numerics numerics) {
  const bool grad = needs_autograd(x, weight) || (bias.defined() && bias.requires_grad() && at::GradMode::is_enabled());
  // ATen's own op off the CPU (the oneDNN kernels below read host memory).
  if (grad || numerics == Numerics::kReference || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat ||
      !x.is_cpu()) {
    at::Tensor y = at::linear(x, weight, bias);
    if (activation == Activation::kGelu) return at::gelu(y);
    if (activation == Activation::kRelu) return at::relu(y);
    return y;
  }
  const int64_t k = x.size(-1);
  const at::Tensor x2 = x.stride(-1) == 1 && x.dim() == 2 ? x : x.reshape({-1, k});
  const at::Tensor a = x2.stride(1) == 1 ? x2 : x2.contiguous();
  const at::Tensor w = weight.is_contiguous() ? weight : weight.contiguous();
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = weight.size(0);
  at::Tensor out = at::empty(out_shape, x.options());
  if (a.size(0) == 0) return out;
  // GELU in place after the product rather than oneDNN's erf-GELU post-op, which is much slower
  // than the product itself: ATen's vectorised GELU is the very function torch.nn.GELU calls.
  const bool fused = activation != Activation::kGelu;
  run_matmul(a, w.t(), b, out.view({-1, weight.size(0)}), fused ? activation : Activation::kNone, 1.0f);
  if (!fused) at::gelu_(out);
  return out;
}

void matmul_into(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, float alpha) {
  if (a.size(0) == 0 || b.size(1) == 0) return;
  run_matmul(a, b, at::Tensor(), out, Activation::kNone, alpha);
}

}  // namespace ptq4sam::kernels
