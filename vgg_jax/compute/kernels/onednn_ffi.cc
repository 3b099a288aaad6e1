// oneDNN convolutions and matrix products as XLA FFI custom calls (see vgg_jax/onednn.py).
//
// Every handler takes NHWC activations and HWIO kernels (JAX's layouts), float32 or
// bfloat16 (both operands the same), accumulates in float32 and writes its result in the
// result buffer's dtype. Primitives are created once per shape and dtype and cached; oneDNN
// picks the kernel (AVX2, AVX-512, AVX-512 BF16, AMX) for this CPU, with kernels in its own
// blocked layout where that is faster (reordered from HWIO on every call). The forward
// convolution may add a bias and apply ReLU in the same pass (oneDNN post-op), and the kernel
// gradient may also give the bias gradient (the sum of the output gradient), which saves XLA
// a pass over the activation each. The tap-by-tap convolution (``Taps*``) takes HWNC
// activations instead, in which every kernel tap's product is a few dense matrix products.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::data_type DnnlType(ffi::DataType t) {
  return t == ffi::DataType::BF16 ? memory::data_type::bf16 : memory::data_type::f32;
}

bool Supported(ffi::DataType t) { return t == ffi::DataType::BF16 || t == ffi::DataType::F32; }

// A primitive with the memory descriptors it was made for; "user" descriptors are the
// layouts JAX hands over, the others what the primitive wants.
struct Plan {
  dnnl::primitive primitive;
  memory::desc a, b, c;        // what the primitive reads and writes
  memory::desc a_user, b_user, c_user;
  memory::desc bias;           // the bias (forward) or its gradient (kernel gradient), if any
  memory::desc scratchpad;     // per call: calls from several devices' threads run at once
  std::string impl;
};

// What a convolution adds to the plain product: a bias of this dtype (kNoBias: none),
// ReLU after it (forward only), and whether the kernel gradient reads its activations in
// oneDNN's blocked layout (copied there first) rather than as NHWC.
constexpr int kNoBias = -1;
struct Extras {
  int bias = kNoBias;
  bool relu = false;
  bool blocked = false;
};

using Key = std::tuple<int, std::vector<int64_t>, int, int, int, bool, bool>;
std::mutex cache_mutex;
std::map<Key, std::shared_ptr<Plan>> cache;

enum Op { kConvForward = 0, kConvBackwardData = 1, kConvBackwardWeights = 2, kMatmul = 3 };

memory::dims Pad(int64_t k) { return {k / 2, k / 2}; }

// dims: N, H, W, C, KH, KW, O (convolutions) or M, K, N, transpose A, transpose B[,
// accumulate] (matmul).
std::shared_ptr<Plan> MakePlan(Op op, const std::vector<int64_t>& d, memory::data_type in,
                               memory::data_type out, Extras extras) {
  auto plan = std::make_shared<Plan>();
  auto& eng = Engine();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::post_ops post;
  if (op == kMatmul && d.size() > 5 && d[5]) post.append_sum(1.f);
  if (extras.relu) post.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  if (post.len() > 0) attr.set_post_ops(post);
  if (op == kMatmul) {  // d: M, K, N, whether A is stored transposed (K x M), whether B is,
                        // and (optional) whether C is added to rather than overwritten
    int64_t m = d[0], k = d[1], n = d[2];
    plan->a_user = plan->a = memory::desc({m, k}, in, d[3] ? tag::ba : tag::ab);
    // B as stored: oneDNN's blocked layout would need a reorder of the whole matrix per call,
    // which costs more than the product at VGG's batch sizes (fc6: 5x slower).
    plan->b_user = plan->b = memory::desc({k, n}, in, d[4] ? tag::ba : tag::ab);
    plan->c_user = plan->c = memory::desc({m, n}, out, tag::ab);
    auto pd = dnnl::matmul::primitive_desc(eng, plan->a, plan->b, plan->c, attr);
    plan->scratchpad = pd.scratchpad_desc();
    plan->primitive = dnnl::matmul(pd);
    plan->impl = pd.impl_info_str();
    return plan;
  }
  int64_t n = d[0], h = d[1], w = d[2], c = d[3], kh = d[4], kw = d[5], o = d[6];
  memory::dims strides = {1, 1}, pad_h_w = {kh / 2, kw / 2};
  auto src = memory::desc({n, c, h, w}, in, tag::nhwc);
  auto wei_any = memory::desc({o, c, kh, kw}, in, tag::any);
  auto wei_user = memory::desc({o, c, kh, kw}, in, tag::hwio);
  auto dst = memory::desc({n, o, h, w}, in, tag::nhwc);
  // The activations as the primitive reads them: NHWC, or the layout it prefers.
  auto layout = extras.blocked && op == kConvBackwardWeights ? tag::any : tag::nhwc;
  auto src_read = memory::desc({n, c, h, w}, in, layout);
  auto dst_read = memory::desc({n, o, h, w}, in, layout);
  if (extras.bias != kNoBias)
    plan->bias = memory::desc({o}, static_cast<memory::data_type>(extras.bias), tag::a);
  dnnl::primitive_attr fwd_attr = op == kConvForward ? attr : dnnl::primitive_attr();
  if (op != kConvForward) fwd_attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      eng, op == kConvForward ? dnnl::prop_kind::forward_inference
                              : dnnl::prop_kind::forward_training,
      dnnl::algorithm::convolution_direct, src_read, wei_any, plan->bias,
      memory::desc({n, o, h, w}, op == kConvForward ? out : in, layout), strides,
      pad_h_w, pad_h_w, fwd_attr);
  if (op == kConvForward) {
    plan->a_user = plan->a = src;
    plan->b_user = wei_user;
    plan->b = fwd.weights_desc();
    plan->c_user = plan->c = memory::desc({n, o, h, w}, out, tag::nhwc);
    plan->primitive = dnnl::convolution_forward(fwd);
    plan->scratchpad = fwd.scratchpad_desc();
    plan->impl = fwd.impl_info_str();
  } else if (op == kConvBackwardData) {  // a = dy, b = kernel, c = dx
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, memory::desc({n, c, h, w}, out, tag::nhwc),
        wei_any, dst, strides, pad_h_w, pad_h_w, fwd, attr);
    plan->scratchpad = pd.scratchpad_desc();
    plan->a_user = plan->a = dst;
    plan->b_user = wei_user;
    plan->b = pd.weights_desc();
    plan->c_user = plan->c = pd.diff_src_desc();
    plan->primitive = dnnl::convolution_backward_data(pd);
    plan->impl = pd.impl_info_str();
  } else {  // a = x, b = dy, c = d kernel
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, src_read,
        memory::desc({o, c, kh, kw}, out, tag::any), plan->bias, dst_read, strides, pad_h_w,
        pad_h_w, fwd, attr);
    plan->scratchpad = pd.scratchpad_desc();
    plan->a_user = src;
    plan->a = pd.src_desc();
    plan->b_user = dst;
    plan->b = pd.diff_dst_desc();
    plan->c = pd.diff_weights_desc();
    plan->c_user = memory::desc({o, c, kh, kw}, out, tag::hwio);
    plan->primitive = dnnl::convolution_backward_weights(pd);
    plan->impl = pd.impl_info_str();
  }
  return plan;
}

std::shared_ptr<Plan> GetPlan(Op op, const std::vector<int64_t>& dims, memory::data_type in,
                              memory::data_type out, Extras extras = {}) {
  Key key{op, dims, static_cast<int>(in), static_cast<int>(out), extras.bias, extras.relu,
          extras.blocked};
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto plan = MakePlan(op, dims, in, out, extras);
  cache.emplace(key, plan);
  return plan;
}

// A buffer a call needs beside its operands (a blocked copy, a scratchpad), taken from a
// pool of freed ones and given back when done. Allocated afresh on every call, each would
// page-fault in again at every step (VGG-16 224/8 float32 training with blocked kernel
// gradients: 12-15k faults a step, against 850 without them). The pool keeps what the calls
// running at once needed, until the process ends; a buffer is reused for requests of at
// least half its size, so one large buffer does not serve (and hold up) a small request.
class Workspace {
 public:
  explicit Workspace(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(bytes);
    if (it != free_.end() && it->first <= 2 * std::max<size_t>(bytes, 4096)) {
      bytes_ = it->first, data_ = it->second;
      free_.erase(it);
      return;
    }
    // 2 MiB-aligned above 2 MiB, so that transparent huge pages can back all of it.
    size_t align = bytes >= kHuge ? kHuge : 64;
    bytes_ = (std::max<size_t>(bytes, 64) + align - 1) / align * align;
    data_ = std::aligned_alloc(align, bytes_);
    if (data_ == nullptr) throw dnnl::error(dnnl_out_of_memory, "workspace allocation");
  }
  ~Workspace() {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.emplace(bytes_, data_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* data() const { return data_; }

 private:
  static constexpr size_t kHuge = size_t{2} << 20;
  static inline std::mutex mutex_;
  static inline std::multimap<size_t, void*> free_;
  size_t bytes_ = 0;
  void* data_ = nullptr;
};

// Runs a plan on raw buffers, reordering from and to JAX's layouts where they differ;
// ``bias`` is the bias (forward) or where its gradient goes (kernel gradient), if planned.
void Run(Op op, const Plan& p, void* a, void* b, void* c, void* bias = nullptr) {
  auto& eng = Engine();
  dnnl::stream stream(eng);
  memory a_mem(p.a_user, eng, a), b_mem(p.b_user, eng, b), c_user(p.c_user, eng, c);
  std::vector<std::unique_ptr<Workspace>> copies;
  auto copy = [&](const memory::desc& desc) {
    copies.push_back(std::make_unique<Workspace>(desc.get_size()));
    return memory(desc, eng, copies.back()->data());
  };
  for (auto [mem, want] : {std::pair{&a_mem, &p.a}, std::pair{&b_mem, &p.b}}) {
    if (*want == mem->get_desc()) continue;
    memory blocked = copy(*want);
    dnnl::reorder(*mem, blocked).execute(stream, *mem, blocked);
    *mem = blocked;
  }
  memory c_mem = p.c != p.c_user ? copy(p.c) : c_user;
  int a_arg, b_arg, c_arg;
  switch (op) {
    case kConvForward: a_arg = DNNL_ARG_SRC; b_arg = DNNL_ARG_WEIGHTS; c_arg = DNNL_ARG_DST; break;
    case kConvBackwardData:
      a_arg = DNNL_ARG_DIFF_DST; b_arg = DNNL_ARG_WEIGHTS; c_arg = DNNL_ARG_DIFF_SRC; break;
    case kConvBackwardWeights:
      a_arg = DNNL_ARG_SRC; b_arg = DNNL_ARG_DIFF_DST; c_arg = DNNL_ARG_DIFF_WEIGHTS; break;
    default: a_arg = DNNL_ARG_SRC; b_arg = DNNL_ARG_WEIGHTS; c_arg = DNNL_ARG_DST;
  }
  std::unordered_map<int, memory> args{{a_arg, a_mem}, {b_arg, b_mem}, {c_arg, c_mem}};
  if (p.scratchpad.get_size() > 0) args.emplace(DNNL_ARG_SCRATCHPAD, copy(p.scratchpad));
  if (bias != nullptr)
    args.emplace(op == kConvForward ? DNNL_ARG_BIAS : DNNL_ARG_DIFF_BIAS,
                 memory(p.bias, eng, bias));
  p.primitive.execute(stream, args);
  if (p.c != p.c_user) dnnl::reorder(c_mem, c_user).execute(stream, c_mem, c_user);
  stream.wait();
}

// Runs ``body``, turning oneDNN's exceptions into XLA's errors.
template <typename Body>
ffi::Error Guarded(Body&& body) {
  try {
    body();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

// ``bias``: the bias buffer (forward) or its gradient's (kernel gradient), or null.
ffi::Error Call(Op op, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c,
                std::vector<int64_t> dims, ffi::AnyBuffer* bias = nullptr,
                bool relu = false, bool blocked = false) {
  if (!Supported(a.element_type()) || a.element_type() != b.element_type() ||
      !Supported(c->element_type()) || (bias && !Supported(bias->element_type())))
    return ffi::Error::InvalidArgument("vgg_jax oneDNN kernels take float32 or bfloat16");
  return Guarded([&] {
    Extras extras{bias ? static_cast<int>(DnnlType(bias->element_type())) : kNoBias, relu,
                  blocked};
    auto plan = GetPlan(op, dims, DnnlType(a.element_type()), DnnlType(c->element_type()),
                        extras);
    Run(op, *plan, a.untyped_data(), b.untyped_data(), c->untyped_data(),
        bias ? bias->untyped_data() : nullptr);
  });
}

std::vector<int64_t> Dims(ffi::AnyBuffer::Dimensions d) { return {d.begin(), d.end()}; }

ffi::Error ConvForward(ffi::AnyBuffer x, ffi::AnyBuffer k, ffi::Result<ffi::AnyBuffer> y) {
  auto xd = Dims(x.dimensions()), kd = Dims(k.dimensions());
  return Call(kConvForward, x, k, y, {xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3]});
}

ffi::Error ConvBiasForward(ffi::AnyBuffer x, ffi::AnyBuffer k, ffi::AnyBuffer bias,
                           ffi::Result<ffi::AnyBuffer> y, bool relu) {
  auto xd = Dims(x.dimensions()), kd = Dims(k.dimensions());
  return Call(kConvForward, x, k, y, {xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3]}, &bias,
              relu);
}

ffi::Error ConvBackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer k, ffi::Result<ffi::AnyBuffer> dx) {
  auto yd = Dims(dy.dimensions()), kd = Dims(k.dimensions());
  return Call(kConvBackwardData, dy, k, dx, {yd[0], yd[1], yd[2], kd[2], kd[0], kd[1], kd[3]});
}

ffi::Error ConvBackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                               ffi::Result<ffi::AnyBuffer> dk, bool blocked) {
  auto xd = Dims(x.dimensions()), kd = Dims(dk->dimensions());
  return Call(kConvBackwardWeights, x, dy, dk, {xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3]},
              nullptr, false, blocked);
}

// The whole backward pass of conv_bias in one call, so that XLA never runs two of its
// primitives at once (each uses every core; together they thrash): the input gradient
// unless ``data`` is false (nothing needs it: the images), then the kernel and bias
// gradients unless ``weights`` is false (the parameters are not differentiated), reading
// the activations in oneDNN's blocked layout if ``blocked``.
ffi::Error ConvBiasBackward(ffi::AnyBuffer dy, ffi::AnyBuffer x, ffi::AnyBuffer k,
                            ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dk,
                            ffi::Result<ffi::AnyBuffer> dbias, bool data, bool weights,
                            bool blocked) {
  auto xd = Dims(x.dimensions()), kd = Dims(k.dimensions());
  std::vector<int64_t> dims{xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3]};
  if (data) {
    auto error = Call(kConvBackwardData, dy, k, dx, dims);
    if (!error.success()) return error;
  }
  if (!weights) return ffi::Error::Success();
  ffi::AnyBuffer db = *dbias;
  return Call(kConvBackwardWeights, x, dy, dk, dims, &db, false, blocked);
}

// c = op(a) @ op(b), op transposing a (stored K x M) or b (stored N x K) where asked.
ffi::Error Matmul(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c,
                  bool transpose_a, bool transpose_b) {
  auto ad = Dims(a.dimensions()), bd = Dims(b.dimensions());
  int64_t m = transpose_a ? ad[1] : ad[0], k = transpose_a ? ad[0] : ad[1];
  int64_t n = transpose_b ? bd[0] : bd[1];
  return Call(kMatmul, a, b, c, {m, k, n, transpose_a, transpose_b});
}


// The tap-by-tap convolution (vgg_jax.conv.taps) on HWNC activations: (H, W, N, C) seen as
// an (H*W*N) x C matrix whose rows are pixels. Tap (ty, tx) adds input pixel
// (y + dy, x + dx) times its C x O matrix to output pixel (y, x), for the (y, x) where that
// input lies inside the map; those rows of one output map row are contiguous (all of a row's
// N images), and so are the input's, so each tap is one dense product per map row, or one
// in all where it spans whole rows: no padding is multiplied and nothing is copied.
struct Rows {
  int64_t in, out, count;  // first input row, first output row, rows
};

std::vector<Rows> TapRows(int64_t h, int64_t w, int64_t n, int64_t dy, int64_t dx) {
  int64_t y0 = std::max<int64_t>(0, -dy), y1 = std::min(h, h - dy);
  int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min(w, w - dx);
  if (y1 <= y0 || x1 <= x0) return {};
  if (x1 - x0 == w) return {{(y0 + dy) * w * n, y0 * w * n, (y1 - y0) * w * n}};
  std::vector<Rows> rows;
  for (int64_t y = y0; y < y1; ++y)
    rows.push_back({((y + dy) * w + x0 + dx) * n, (y * w + x0) * n, (x1 - x0) * n});
  return rows;
}

// The taps in the order they are summed: the centre first (it reaches every output pixel,
// so it initialises the sum), then the others.
std::vector<std::pair<int64_t, int64_t>> TapOrder(int64_t kh, int64_t kw) {
  std::vector<std::pair<int64_t, int64_t>> order{{kh / 2, kw / 2}};
  for (int64_t ty = 0; ty < kh; ++ty)
    for (int64_t tx = 0; tx < kw; ++tx)
      if (ty != kh / 2 || tx != kw / 2) order.push_back({ty, tx});
  return order;
}

// c (+)= op(a) @ op(b) for (rows x K) blocks, each product planned once per shape.
void Product(int64_t m, int64_t k, int64_t n, bool ta, bool tb, bool accumulate,
             memory::data_type in, const void* a, const void* b, float* c) {
  auto plan = GetPlan(kMatmul, {m, k, n, ta, tb, accumulate}, in, memory::data_type::f32);
  Run(kMatmul, *plan, const_cast<void*>(a), const_cast<void*>(b), c);
}

// y = taps(x, k) (forward) or dx = taps'(dy, k) (input gradient: every offset reversed, each
// tap's matrix transposed): x (H, W, N, C), k (KH, KW, C, O), y (H, W, N, O) in float32;
// for the gradient x is dy (H, W, N, O) and y is dx (H, W, N, C).
void TapsConvolve(const char* x, const char* k, float* y, int64_t h, int64_t w, int64_t n,
                  int64_t c, int64_t o, int64_t kh, int64_t kw, bool gradient,
                  memory::data_type in, size_t item) {
  bool first = true;
  for (auto [ty, tx] : TapOrder(kh, kw)) {
    int64_t dy = ty - kh / 2, dx = tx - kw / 2;
    if (gradient) dy = -dy, dx = -dx;
    const char* tap = k + (ty * kw + tx) * c * o * item;
    for (const Rows& r : TapRows(h, w, n, dy, dx)) {
      // k's (C, O) matrix as stored, or read transposed as (O, C) for the input gradient.
      int64_t cin = gradient ? o : c, cout = gradient ? c : o;
      Product(r.count, cin, cout, false, gradient, !first, in, x + r.in * cin * item, tap,
              y + r.out * cout);
    }
    first = false;
  }
}

// dk[ty, tx] = sum over the rows a tap meets of x_rows^T @ dy_rows, in float32.
void TapsKernelGradient(const char* x, const char* dy, float* dk, int64_t h, int64_t w,
                        int64_t n, int64_t c, int64_t o, int64_t kh, int64_t kw,
                        memory::data_type in, size_t item) {
  for (int64_t ty = 0; ty < kh; ++ty)
    for (int64_t tx = 0; tx < kw; ++tx) {
      float* tap = dk + (ty * kw + tx) * c * o;
      auto rows = TapRows(h, w, n, ty - kh / 2, tx - kw / 2);
      if (rows.empty()) std::memset(tap, 0, c * o * sizeof(float));
      for (size_t i = 0; i < rows.size(); ++i)
        Product(c, rows[i].count, o, true, false, i > 0, in, x + rows[i].in * c * item,
                dy + rows[i].out * o * item, tap);
    }
}

// Whether the taps' operands have one dtype that oneDNN takes and their results are float32.
bool TapsTypes(std::initializer_list<ffi::DataType> in,
               std::initializer_list<ffi::DataType> out) {
  for (auto t : in)
    if (!Supported(t) || t != *in.begin()) return false;
  for (auto t : out)
    if (t != ffi::DataType::F32) return false;
  return true;
}

const char kTapsTypes[] = "vgg_jax taps: float32 or bfloat16 in, float32 out";

ffi::Error TapsForward(ffi::AnyBuffer x, ffi::AnyBuffer k, ffi::Result<ffi::AnyBuffer> y) {
  if (!TapsTypes({x.element_type(), k.element_type()}, {y->element_type()}))
    return ffi::Error::InvalidArgument(kTapsTypes);
  auto xd = Dims(x.dimensions()), kd = Dims(k.dimensions());
  return Guarded([&] {
    TapsConvolve(static_cast<const char*>(x.untyped_data()),
                 static_cast<const char*>(k.untyped_data()),
                 static_cast<float*>(y->untyped_data()), xd[0], xd[1], xd[2], xd[3], kd[3],
                 kd[0], kd[1], false, DnnlType(x.element_type()),
                 ffi::ByteWidth(x.element_type()));
  });
}

// Both gradients in one call (see ConvBiasBackward): dy (H, W, N, O), x (H, W, N, C).
ffi::Error TapsBackward(ffi::AnyBuffer dy, ffi::AnyBuffer x, ffi::AnyBuffer k,
                        ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dk) {
  if (!TapsTypes({x.element_type(), k.element_type(), dy.element_type()},
                 {dx->element_type(), dk->element_type()}))
    return ffi::Error::InvalidArgument(kTapsTypes);
  auto xd = Dims(x.dimensions()), kd = Dims(k.dimensions());
  auto in = DnnlType(x.element_type());
  size_t item = ffi::ByteWidth(x.element_type());
  return Guarded([&] {
    TapsConvolve(static_cast<const char*>(dy.untyped_data()),
                 static_cast<const char*>(k.untyped_data()),
                 static_cast<float*>(dx->untyped_data()), xd[0], xd[1], xd[2], kd[2], kd[3],
                 kd[0], kd[1], true, in, item);
    TapsKernelGradient(static_cast<const char*>(x.untyped_data()),
                       static_cast<const char*>(dy.untyped_data()),
                       static_cast<float*>(dk->untyped_data()), xd[0], xd[1], xd[2], xd[3],
                       kd[3], kd[0], kd[1], in, item);
  });
}

}  // namespace

#define VGG_BINARY ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggConvForward, ConvForward, VGG_BINARY);
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggConvBiasForward, ConvBiasForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggConvBackwardData, ConvBackwardData, VGG_BINARY);
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggConvBackwardWeights, ConvBackwardWeights,
                              VGG_BINARY.Attr<bool>("blocked"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggConvBiasBackward, ConvBiasBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("data")
                                  .Attr<bool>("weights")
                                  .Attr<bool>("blocked"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(VggTapsForward, TapsForward, VGG_BINARY);
XLA_FFI_DEFINE_HANDLER_SYMBOL(VggTapsBackward, TapsBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

// The kernel oneDNN picked for a convolution (empty if it cannot make one): for logs and tests.
// op: 0 forward, 1 input gradient, 2 kernel gradient; bias: with the bias (and its gradient);
// blocked: the kernel gradient reading oneDNN's blocked layout.
extern "C" const char* VggConvImplementation(int64_t n, int64_t h, int64_t w, int64_t c,
                                             int64_t kh, int64_t kw, int64_t o, int bf16,
                                             int op, int bias, int blocked) {
  static thread_local std::string impl;
  try {
    auto t = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    Extras extras{bias && op != kConvBackwardData ? static_cast<int>(t) : kNoBias, false,
                  blocked != 0};
    impl = GetPlan(static_cast<Op>(op), {n, h, w, c, kh, kw, o}, t, t, extras)->impl;
  } catch (const dnnl::error&) {
    impl.clear();
  }
  return impl.c_str();
}
