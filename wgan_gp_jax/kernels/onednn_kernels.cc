// The three faces of conv.py's trilinear form as oneDNN's direct convolutions, and batch normalisation (with the ReLU
// after it fused in; models/layers.py's batch_norm), behind XLA FFI handlers.
//
// x (N, H, W, C) and y (N, h, w, D) are NHWC, the kernel (kh, kw, C, D) is HWIO, all float32 and row-major, as XLA
// lays them out; oneDNN reads and writes them in place. Only the kernel is reordered, to and from the (blocked) layout
// the chosen primitive wants, through a buffer of its own (kernels are small). Built and loaded by wgan_gp_jax/onednn.py.
//
// One convolution runs at a time, on oneDNN's (TBB's) threads: XLA:CPU runs independent operations side by side, and
// two oneDNN calls at once would each split the same cores.
//
// Every primitive has a scratchpad of its own (scratchpad_mode::user). The library's default mode shares a buffer per
// *thread*, sized by the primitives created on that thread; XLA runs a handler on whichever of its threads is free, so
// a primitive created on one thread and run on another used that thread's buffer: smaller (it wrote past its end:
// heap corruption, now and then, in the tests, 2026-12-03) or none (a segfault; tests/test_onednn.py runs one so).

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

// kScatterBias: the scatter plus a bias, as oneDNN's deconvolution (which adds the bias in its kernel).
enum Face : int64_t { kCorrelate = 0, kScatter = 1, kWeight = 2, kScatterBias = 3 };

// face, N, H, W, C, h, w, D, kh, kw, stride (2), low padding (2), high padding (2)
using Key = std::array<int64_t, 16>;

struct Primitive {
  dnnl::primitive convolution;
  memory x, y, user_kernel, bias;  // described once; their data handles are set per call
  memory kernel;             // in the primitive's layout (blocked), a buffer of its own
  dnnl::reorder to_primitive, from_primitive;
  memory scratchpad;         // the largest any of the three needs (calls are serialised: one is enough)
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::mutex mutex;  // guards the cache and serialises the calls (see the top)
std::map<Key, std::unique_ptr<Primitive>> cache;

Primitive& Get(const Key& k) {
  auto found = cache.find(k);
  if (found != cache.end()) return *found->second;
  const int64_t face = k[0], n = k[1], H = k[2], W = k[3], C = k[4], h = k[5], w = k[6], D = k[7], kh = k[8],
                kw = k[9];
  const memory::dims strides{k[10], k[11]}, low{k[12], k[13]}, high{k[14], k[15]};
  auto& engine = Engine();
  const memory::desc x_desc({n, C, H, W}, kF32, Tag::nhwc), y_desc({n, D, h, w}, kF32, Tag::nhwc);
  const memory::desc any_kernel({D, C, kh, kw}, kF32, Tag::any);
  memory::desc hwio_kernel({D, C, kh, kw}, kF32, Tag::hwio);
  const auto algorithm = dnnl::algorithm::convolution_direct;
  dnnl::primitive_attr attributes;
  attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const dnnl::convolution_forward::primitive_desc forward(engine, dnnl::prop_kind::forward_training, algorithm, x_desc,
                                                          any_kernel, y_desc, strides, low, high, attributes);
  auto p = std::make_unique<Primitive>();
  memory::desc kernel_desc, scratchpad_desc;
  if (face == kCorrelate) {
    p->convolution = dnnl::convolution_forward(forward);
    kernel_desc = forward.weights_desc();
    scratchpad_desc = forward.scratchpad_desc();
  } else if (face == kScatterBias) {
    // The deconvolution's weights are (its outputs C, its inputs D, kh, kw): our HWIO kernel with strides to match.
    hwio_kernel = memory::desc({C, D, kh, kw}, kF32, memory::dims{D, 1, kw * C * D, C * D});
    const memory::desc any_deconvolution_kernel({C, D, kh, kw}, kF32, Tag::any);
    const dnnl::deconvolution_forward::primitive_desc deconvolution(
        engine, dnnl::prop_kind::forward_training, dnnl::algorithm::deconvolution_direct, y_desc,
        any_deconvolution_kernel, memory::desc({C}, kF32, Tag::a), x_desc, strides, low, high, attributes);
    p->convolution = dnnl::deconvolution_forward(deconvolution);
    kernel_desc = deconvolution.weights_desc();
    scratchpad_desc = deconvolution.scratchpad_desc();
  } else if (face == kScatter) {
    const dnnl::convolution_backward_data::primitive_desc backward(engine, algorithm, x_desc, any_kernel, y_desc,
                                                                   strides, low, high, forward, attributes);
    p->convolution = dnnl::convolution_backward_data(backward);
    kernel_desc = backward.weights_desc();
    scratchpad_desc = backward.scratchpad_desc();
  } else {
    const dnnl::convolution_backward_weights::primitive_desc backward(engine, algorithm, x_desc, any_kernel, y_desc,
                                                                      strides, low, high, forward, attributes);
    p->convolution = dnnl::convolution_backward_weights(backward);
    kernel_desc = backward.diff_weights_desc();
    scratchpad_desc = backward.scratchpad_desc();
  }
  p->bias = memory(memory::desc({C}, kF32, Tag::a), engine, DNNL_MEMORY_NONE);
  p->x = memory(x_desc, engine, DNNL_MEMORY_NONE);
  p->y = memory(y_desc, engine, DNNL_MEMORY_NONE);
  p->user_kernel = memory(hwio_kernel, engine, DNNL_MEMORY_NONE);
  p->kernel = memory(kernel_desc, engine);
  const dnnl::reorder::primitive_desc to_primitive(engine, hwio_kernel, engine, kernel_desc, attributes);
  const dnnl::reorder::primitive_desc from_primitive(engine, kernel_desc, engine, hwio_kernel, attributes);
  p->to_primitive = dnnl::reorder(to_primitive);
  p->from_primitive = dnnl::reorder(from_primitive);
  size_t scratchpad_bytes = scratchpad_desc.get_size();
  for (const auto& reorder : {to_primitive, from_primitive}) {
    scratchpad_bytes = std::max(scratchpad_bytes, reorder.scratchpad_desc().get_size());
  }
  p->scratchpad = memory(memory::desc({static_cast<memory::dim>(scratchpad_bytes)}, memory::data_type::u8, Tag::a),
                         engine);
  return *cache.emplace(k, std::move(p)).first->second;
}

// `bias`: kScatterBias's, one per output channel (C).
ffi::Error Run(Face face, ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> kernel_dims,
               ffi::Span<const int64_t> y_dims, float* x, float* kernel, float* y, int64_t stride_h, int64_t stride_w,
               int64_t low_h, int64_t low_w, int64_t high_h, int64_t high_w, const float* bias = nullptr) {
  if (x_dims.size() != 4 || kernel_dims.size() != 4 || y_dims.size() != 4) {
    return ffi::Error::InvalidArgument("onednn_kernels: every operand must be 4-D (NHWC, HWIO)");
  }
  const Key key{face,         x_dims[0],      x_dims[1], x_dims[2], x_dims[3], y_dims[1], y_dims[2], y_dims[3],
                kernel_dims[0], kernel_dims[1], stride_h, stride_w,  low_h,     low_w,     high_h,    high_w};
  try {
    std::lock_guard<std::mutex> lock(mutex);
    Primitive& p = Get(key);
    dnnl::stream stream(Engine());
    p.x.set_data_handle(x);
    p.y.set_data_handle(y);
    p.user_kernel.set_data_handle(kernel);
    const auto reorder = [&](dnnl::reorder& r, memory& from, memory& to) {
      r.execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, p.scratchpad}});
    };
    if (face == kCorrelate) {
      reorder(p.to_primitive, p.user_kernel, p.kernel);
      p.convolution.execute(stream, {{DNNL_ARG_SRC, p.x}, {DNNL_ARG_WEIGHTS, p.kernel}, {DNNL_ARG_DST, p.y},
                                     {DNNL_ARG_SCRATCHPAD, p.scratchpad}});
    } else if (face == kScatterBias) {
      p.bias.set_data_handle(const_cast<float*>(bias));
      reorder(p.to_primitive, p.user_kernel, p.kernel);
      p.convolution.execute(stream, {{DNNL_ARG_SRC, p.y}, {DNNL_ARG_WEIGHTS, p.kernel}, {DNNL_ARG_BIAS, p.bias},
                                     {DNNL_ARG_DST, p.x}, {DNNL_ARG_SCRATCHPAD, p.scratchpad}});
    } else if (face == kScatter) {
      reorder(p.to_primitive, p.user_kernel, p.kernel);
      p.convolution.execute(stream, {{DNNL_ARG_DIFF_SRC, p.x}, {DNNL_ARG_WEIGHTS, p.kernel}, {DNNL_ARG_DIFF_DST, p.y},
                                     {DNNL_ARG_SCRATCHPAD, p.scratchpad}});
    } else {
      p.convolution.execute(stream, {{DNNL_ARG_SRC, p.x}, {DNNL_ARG_DIFF_WEIGHTS, p.kernel}, {DNNL_ARG_DIFF_DST, p.y},
                                     {DNNL_ARG_SCRATCHPAD, p.scratchpad}});
      reorder(p.from_primitive, p.kernel, p.user_kernel);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;
#define GEOMETRY_PARAMETERS \
  int64_t stride_h, int64_t stride_w, int64_t low_h, int64_t low_w, int64_t high_h, int64_t high_w
#define GEOMETRY stride_h, stride_w, low_h, low_w, high_h, high_w

ffi::Error Correlate(F32 x, F32 kernel, F32Result y, GEOMETRY_PARAMETERS) {
  return Run(kCorrelate, x.dimensions(), kernel.dimensions(), y->dimensions(), x.typed_data(), kernel.typed_data(),
             y->typed_data(), GEOMETRY);
}

ffi::Error Scatter(F32 y, F32 kernel, F32Result x, GEOMETRY_PARAMETERS) {
  return Run(kScatter, x->dimensions(), kernel.dimensions(), y.dimensions(), x->typed_data(), kernel.typed_data(),
             y.typed_data(), GEOMETRY);
}

ffi::Error ScatterBias(F32 y, F32 kernel, F32 bias, F32Result x, GEOMETRY_PARAMETERS) {
  if (bias.element_count() != static_cast<size_t>(x->dimensions()[3])) {
    return ffi::Error::InvalidArgument("onednn_kernels: the bias must have one entry per output channel");
  }
  return Run(kScatterBias, x->dimensions(), kernel.dimensions(), y.dimensions(), x->typed_data(), kernel.typed_data(),
             y.typed_data(), GEOMETRY, bias.typed_data());
}

ffi::Error Weight(F32 x, F32 y, F32Result kernel, GEOMETRY_PARAMETERS) {
  return Run(kWeight, x.dimensions(), kernel->dimensions(), y.dimensions(), x.typed_data(), kernel->typed_data(),
             y.typed_data(), GEOMETRY);
}

// ---------------------------------------------------------------------------------------------------------------
// Batch normalisation over N, H, W (x NHWC), with the ReLU after it fused in, training mode: the forward pass gives
// the output, the batch's mean and (biased) variance, and the ReLU's mask (oneDNN's workspace); the backward pass
// the gradients of x, scale and shift.

struct Norm {
  dnnl::primitive forward, backward;
  memory::desc x_desc, stats_desc, workspace_desc;
  memory forward_scratchpad, backward_scratchpad;
};

std::map<std::array<int64_t, 6>, std::unique_ptr<Norm>> norm_cache;

Norm& GetNorm(int64_t n, int64_t H, int64_t W, int64_t C, float epsilon, bool relu) {
  int32_t epsilon_bits;
  std::memcpy(&epsilon_bits, &epsilon, sizeof epsilon_bits);
  const std::array<int64_t, 6> k{n, H, W, C, epsilon_bits, relu};
  auto found = norm_cache.find(k);
  if (found != norm_cache.end()) return *found->second;
  auto& engine = Engine();
  auto p = std::make_unique<Norm>();
  p->x_desc = memory::desc({n, C, H, W}, kF32, Tag::nhwc);
  p->stats_desc = memory::desc({C}, kF32, Tag::a);
  auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  if (relu) flags = flags | dnnl::normalization_flags::fuse_norm_relu;
  dnnl::primitive_attr attributes;
  attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const dnnl::batch_normalization_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, p->x_desc, p->x_desc, epsilon, flags, attributes);
  const dnnl::batch_normalization_backward::primitive_desc backward(
      engine, dnnl::prop_kind::backward, p->x_desc, p->x_desc, p->x_desc, epsilon, flags, forward, attributes);
  p->forward = dnnl::batch_normalization_forward(forward);
  p->backward = dnnl::batch_normalization_backward(backward);
  p->workspace_desc = forward.workspace_desc();
  p->forward_scratchpad = memory(forward.scratchpad_desc(), engine);
  p->backward_scratchpad = memory(backward.scratchpad_desc(), engine);
  return *norm_cache.emplace(k, std::move(p)).first->second;
}

memory Wrap(const memory::desc& desc, void* data) { return memory(desc, Engine(), data); }

ffi::Error NormForward(F32 x, F32 scale, F32 shift, F32Result y, F32Result mean, F32Result variance,
                       ffi::Result<ffi::AnyBuffer> workspace, float epsilon, int64_t relu) {
  const auto d = x.dimensions();
  if (d.size() != 4) return ffi::Error::InvalidArgument("onednn batch norm: x must be 4-D (NHWC)");
  try {
    std::lock_guard<std::mutex> lock(mutex);
    Norm& p = GetNorm(d[0], d[1], d[2], d[3], epsilon, relu != 0);
    if (workspace->size_bytes() < p.workspace_desc.get_size()) {
      return ffi::Error::InvalidArgument("onednn batch norm: the workspace is too small");
    }
    dnnl::stream stream(Engine());
    std::unordered_map<int, memory> arguments{
        {DNNL_ARG_SRC, Wrap(p.x_desc, x.typed_data())},          {DNNL_ARG_DST, Wrap(p.x_desc, y->typed_data())},
        {DNNL_ARG_SCALE, Wrap(p.stats_desc, scale.typed_data())}, {DNNL_ARG_SHIFT, Wrap(p.stats_desc, shift.typed_data())},
        {DNNL_ARG_MEAN, Wrap(p.stats_desc, mean->typed_data())},  {DNNL_ARG_VARIANCE, Wrap(p.stats_desc, variance->typed_data())},
        {DNNL_ARG_SCRATCHPAD, p.forward_scratchpad}};
    if (relu) arguments.emplace(DNNL_ARG_WORKSPACE, Wrap(p.workspace_desc, workspace->untyped_data()));
    p.forward.execute(stream, arguments);
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error NormBackward(F32 x, F32 y_bar, F32 scale, F32 mean, F32 variance, ffi::AnyBuffer workspace,
                        F32Result x_bar, F32Result scale_bar, F32Result shift_bar, float epsilon, int64_t relu) {
  const auto d = x.dimensions();
  if (d.size() != 4) return ffi::Error::InvalidArgument("onednn batch norm: x must be 4-D (NHWC)");
  try {
    std::lock_guard<std::mutex> lock(mutex);
    Norm& p = GetNorm(d[0], d[1], d[2], d[3], epsilon, relu != 0);
    dnnl::stream stream(Engine());
    std::unordered_map<int, memory> arguments{
        {DNNL_ARG_SRC, Wrap(p.x_desc, x.typed_data())},
        {DNNL_ARG_DIFF_DST, Wrap(p.x_desc, y_bar.typed_data())},
        {DNNL_ARG_SCALE, Wrap(p.stats_desc, scale.typed_data())},
        {DNNL_ARG_MEAN, Wrap(p.stats_desc, mean.typed_data())},
        {DNNL_ARG_VARIANCE, Wrap(p.stats_desc, variance.typed_data())},
        {DNNL_ARG_DIFF_SRC, Wrap(p.x_desc, x_bar->typed_data())},
        {DNNL_ARG_DIFF_SCALE, Wrap(p.stats_desc, scale_bar->typed_data())},
        {DNNL_ARG_DIFF_SHIFT, Wrap(p.stats_desc, shift_bar->typed_data())},
        {DNNL_ARG_SCRATCHPAD, p.backward_scratchpad}};
    if (relu) arguments.emplace(DNNL_ARG_WORKSPACE, Wrap(p.workspace_desc, workspace.untyped_data()));
    p.backward.execute(stream, arguments);
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

// Every face: two operands (three with a bias), one result, and the geometry (conv.Geometry) as attributes.
#define GEOMETRY_ATTRIBUTES \
  .Attr<int64_t>("stride_h")     \
      .Attr<int64_t>("stride_w") \
      .Attr<int64_t>("low_h")    \
      .Attr<int64_t>("low_w")    \
      .Attr<int64_t>("high_h")   \
      .Attr<int64_t>("high_w")

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnCorrelate, Correlate,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() GEOMETRY_ATTRIBUTES);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnScatter, Scatter, ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() GEOMETRY_ATTRIBUTES);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnWeight, Weight, ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() GEOMETRY_ATTRIBUTES);
// The scatter with a bias: (y, kernel, bias) -> x.
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnScatterBias, ScatterBias,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>() GEOMETRY_ATTRIBUTES);

// The size in bytes of the ReLU mask the batch norm of an (n, H, W, C) input keeps (0 without the ReLU).
extern "C" int64_t WgangpOnednnNormMaskBytes(int64_t n, int64_t H, int64_t W, int64_t C, float epsilon,
                                                  int64_t relu) {
  try {
    std::lock_guard<std::mutex> lock(mutex);
    return GetNorm(n, H, W, C, epsilon, relu != 0).workspace_desc.get_size();
  } catch (const dnnl::error&) {
    return -1;
  }
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnNormForward, NormForward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnNormBackward, NormBackward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("relu"));
