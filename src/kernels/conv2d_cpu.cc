// oneDNN implementation of the float32 convolution. Activations stay NHWC between layers (the
// ATen ops around them, concatenation, pooling and upsampling, have channels-last kernels), so
// only the weights need oneDNN's blocked layout, reordered once per layout.
#include <dnnl.hpp>

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/onednn.h"
#include "util/error.h"

namespace ptq4sam::kernels {
namespace {

using dnnl::memory;

memory::desc nhwc(int64_t n, int64_t c, int64_t h, int64_t w) {
  return memory::desc({n, c, h, w}, memory::data_type::f32, memory::format_tag::nhwc);
}

}  // namespace

struct Conv2d::Impl {
  int64_t out_channels, in_channels, kernel;
  at::Tensor weight;  // (O, I, k, k) contiguous (oneDNN's oihw), until reordered
  at::Tensor bias;    // (O) or undefined
  int64_t stride, padding;
  ConvActivation activation;

  // A primitive per input size; the weights in its layout, shared by sizes that agree on it.
  struct Prepared {
    dnnl::convolution_forward primitive;
    memory::desc scratchpad;
    std::shared_ptr<memory> weights;
    int64_t out_h, out_w;
  };
  std::mutex mutex;
  std::map<std::tuple<int64_t, int64_t, int64_t, bool>, std::shared_ptr<const Prepared>> prepared;
  // The weights in each layout asked for; the plain one (over `weight`) only until the first
  // reorder, so that one copy of the weights stays resident. Another layout is reordered from
  // whichever is held.
  std::vector<std::pair<memory::desc, std::shared_ptr<memory>>> weight_layouts;

  int64_t out_size(int64_t in) const { return (in + 2 * padding - kernel) / stride + 1; }

  void hold_plain_weights() {
    const memory::desc plain({out_channels, in_channels, kernel, kernel}, memory::data_type::f32, memory::format_tag::oihw);
    weight_layouts.emplace_back(plain, std::make_shared<memory>(plain, cpu_engine(), weight.data_ptr<float>()));
  }

  std::shared_ptr<memory> weights_in(const memory::desc& layout) {
    for (const auto& [desc, mem] : weight_layouts)
      if (desc == layout) return mem;
    auto& engine = cpu_engine();
    auto reordered = std::make_shared<memory>(layout, engine);
    dnnl::stream stream(engine);
    dnnl::reorder(*weight_layouts.front().second, *reordered).execute(stream, *weight_layouts.front().second, *reordered);
    stream.wait();
    if (weight.defined()) {  // the plain copy is no longer needed
      weight_layouts.clear();
      weight = at::Tensor();
    }
    weight_layouts.emplace_back(layout, reordered);
    return reordered;
  }

  std::shared_ptr<const Prepared> prepare(int64_t n, int64_t h, int64_t w, bool with_residual) {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto key = std::make_tuple(n, h, w, with_residual);
    const auto it = prepared.find(key);
    if (it != prepared.end()) return it->second;
    const int64_t oh = out_size(h), ow = out_size(w);
    const memory::desc src = nhwc(n, in_channels, h, w);
    const memory::desc dst = nhwc(n, out_channels, oh, ow);
    const memory::desc any_weights({out_channels, in_channels, kernel, kernel}, memory::data_type::f32,
                                   memory::format_tag::any);
    const memory::desc bias_desc =
        bias.defined() ? memory::desc({out_channels}, memory::data_type::f32, memory::format_tag::x) : memory::desc();
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::post_ops ops;
    // The residual is in dst when the primitive runs; the sum adds it to the product.
    if (with_residual) ops.append_sum(1.0f);
    if (activation == ConvActivation::kSilu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_swish, 1.0f, 0.0f);
    if (activation == ConvActivation::kRelu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(ops);
    const dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               src, any_weights, bias_desc, dst, {stride, stride}, {padding, padding},
                                               {padding, padding});
    const dnnl::convolution_forward::primitive_desc pd(desc, attr, cpu_engine());
    auto p = std::make_shared<const Prepared>(
        Prepared{dnnl::convolution_forward(pd), pd.scratchpad_desc(), weights_in(pd.weights_desc()), oh, ow});
    if (prepared.size() > 64) prepared.clear();  // images of many sizes; callers hold their own
    prepared.emplace(key, p);
    return p;
  }
};

Conv2d::Conv2d(const at::Tensor& weight, const at::Tensor& bias, int64_t stride, int64_t padding,
               ConvActivation activation)
    : impl_(std::make_shared<Impl>()) {
  if (weight.dim() != 4 || weight.size(2) != weight.size(3) || weight.scalar_type() != at::kFloat)
    throw Error("Conv2d", "weight must be a float32 (O, I, k, k) tensor");
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0)))
    throw Error("Conv2d", "bias must have one value per output channel");
  if (stride < 1 || padding < 0) throw Error("Conv2d", "stride must be >= 1 and padding >= 0");
  impl_->out_channels = weight.size(0);
  impl_->in_channels = weight.size(1);
  impl_->kernel = weight.size(2);
  // A copy of its own: the caller's tensor may be a view of a checkpoint's storage.
  impl_->weight = weight.contiguous().clone();
  impl_->bias = bias.defined() ? bias.to(at::kFloat).contiguous().clone() : bias;
  impl_->stride = stride;
  impl_->padding = padding;
  impl_->activation = activation;
  impl_->hold_plain_weights();
}

int64_t Conv2d::in_channels() const { return impl_->in_channels; }
int64_t Conv2d::out_channels() const { return impl_->out_channels; }
int64_t Conv2d::kernel_size() const { return impl_->kernel; }

double Conv2d::macs(int64_t height, int64_t width) const {
  return double(impl_->out_size(height)) * double(impl_->out_size(width)) *
         double(impl_->out_channels * impl_->in_channels * impl_->kernel * impl_->kernel);
}

at::Tensor Conv2d::forward(const at::Tensor& x) const { return run(x, at::Tensor()); }

at::Tensor Conv2d::forward(const at::Tensor& x, const at::Tensor& residual) const {
  if (!residual.defined()) throw Error("Conv2d", "residual must be a tensor");
  return run(x, residual);
}

at::Tensor Conv2d::run(const at::Tensor& x, const at::Tensor& residual) const {
  if (x.dim() != 4 || x.size(1) != in_channels() || x.scalar_type() != at::kFloat)
    throw Error("Conv2d", "input must be float32 (N, " + std::to_string(in_channels()) + ", H, W)");
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  if (impl_->out_size(h) < 1 || impl_->out_size(w) < 1) throw Error("Conv2d", "input smaller than the kernel");
  const at::Tensor src = x.contiguous(at::MemoryFormat::ChannelsLast);
  const auto prepared = impl_->prepare(n, h, w, residual.defined());
  const Impl::Prepared& p = *prepared;
  const auto out_options = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({n, out_channels(), p.out_h, p.out_w}, out_options);
  if (residual.defined()) {
    if (residual.sizes() != out.sizes() || residual.scalar_type() != at::kFloat)
      throw Error("Conv2d", "residual must be float32 of the output's shape");
    out.copy_(residual);  // the primitive's sum post-op adds the product to what dst holds
  }
  auto& engine = cpu_engine();
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(nhwc(n, in_channels(), h, w), engine, const_cast<float*>(src.data_ptr<float>()))},
      {DNNL_ARG_WEIGHTS, *p.weights},
      {DNNL_ARG_DST, memory(nhwc(n, out_channels(), p.out_h, p.out_w), engine, out.data_ptr<float>())}};
  if (impl_->bias.defined())
    args.emplace(DNNL_ARG_BIAS, memory(memory::desc({out_channels()}, memory::data_type::f32, memory::format_tag::x), engine,
                                       impl_->bias.data_ptr<float>()));
  execute(p.primitive, args, p.scratchpad);
  return out;
}

}  // namespace ptq4sam::kernels
