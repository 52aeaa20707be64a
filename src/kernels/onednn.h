#pragma once
// What the float32 oneDNN kernels share: the CPU engine and running a primitive on a
// caller-owned scratchpad. Only the kernels' CPU files include it (it pulls in oneDNN).
#include <dnnl.hpp>

#include <unordered_map>

namespace ptq4sam::kernels {

dnnl::engine& cpu_engine();

// Runs `primitive` on `args` plus a scratchpad of `scratchpad` bytes from this thread's own
// buffer (primitives in user scratchpad mode, so that threads may run one primitive at once),
// and waits for it.
void execute(const dnnl::primitive& primitive, std::unordered_map<int, dnnl::memory>& args,
             const dnnl::memory::desc& scratchpad);

}  // namespace ptq4sam::kernels
