#pragma once
// The one dispatch point of the CPU kernels: which instruction set they use. Every kernel with
// more than one version asks cpu_isa() (or the dispatch macro below), and oneDNN is capped to
// the same level before its first primitive, so one switch moves every path at once.
//
//   PTQ4SAM_CPU=generic|avx2|avx512[,novnni]   (or just "novnni")
//
// lowers the level below what the CPU has (never above it) and, with novnni, turns off the
// VNNI u8 x s8 products. The value is read once, at the first kernel call; anything else in it
// is a ptq4sam::Error.
#include <cstdint>
#include <string>

namespace ptq4sam::kernels {

enum class CpuIsa : int32_t { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

const char* to_string(CpuIsa isa);

// The level the kernels dispatch on: the CPU's own (AVX-512 needs F, BW and VL), lowered by
// PTQ4SAM_CPU and by a ScopedCpuLimit alive on any thread.
CpuIsa cpu_isa();
inline bool cpu_has(CpuIsa isa) { return static_cast<int32_t>(cpu_isa()) >= static_cast<int32_t>(isa); }

// AVX-512 with byte and 128-bit forms (every AVX-512 CPU since Skylake-SP), not turned off by
// PTQ4SAM_CPU: whether a hand-written AVX-512 kernel may run. Kernels written once per level
// pick theirs this way, `(has_avx512() ? kernel_avx512 : kernel_generic)(...)`, where the two
// compute the same numbers; kernels written once use PTQ4SAM_DISPATCH_BY_ISA below. Both ask
// cpu_isa(), so PTQ4SAM_CPU moves every kernel, and integer_matmul_exact()
// (kernels/quantized_linear.h) asks cpu_vnni().
inline bool has_avx512() { return cpu_has(CpuIsa::kAvx512); }

// Whether oneDNN's u8 x s8 products sum in 32 bits here (AVX512-VNNI or AVX-VNNI, not turned
// off): without it they may saturate 16-bit partial sums, so the integer layers are not used.
bool cpu_vnni();

// What the process runs on, e.g. "avx512 + vnni (PTQ4SAM_CPU=...)", for logs and benches.
std::string describe_cpu();

// For tests: while alive, our kernels dispatch on at most `limit` and without VNNI where
// `vnni` is false. oneDNN keeps the level it started with (it is fixed at its first use), so
// float32 oneDNN products are not moved by it; PTQ4SAM_CPU moves them.
class ScopedCpuLimit {
 public:
  explicit ScopedCpuLimit(CpuIsa limit, bool vnni = false);
  ~ScopedCpuLimit();
  ScopedCpuLimit(const ScopedCpuLimit&) = delete;
  ScopedCpuLimit& operator=(const ScopedCpuLimit&) = delete;

 private:
  int32_t previous_isa_;
  bool previous_vnni_;
};

}  // namespace ptq4sam::kernels

// Defines NAME (with the parameter list PARAMS, forwarding ARGS) that calls NAME##_body compiled
// three times (NAME##_clone_avx512, _clone_avx2, _clone_generic), picked by cpu_isa() per call:
// what GCC's target_clones does, but under our switch.
// NAME##_body must be `static inline __attribute__((always_inline))`. Its loops are elementwise
// or integer, in a file compiled with -ffp-contract=off, so every version computes the same
// numbers; only their speed differs.
#define PTQ4SAM_DISPATCH_BY_ISA(RET, NAME, PARAMS, ARGS)                                           \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) RET NAME##_clone_avx512 PARAMS {       \
    return NAME##_body ARGS;                                                                       \
  }                                                                                                \
  __attribute__((target("avx2,fma"))) RET NAME##_clone_avx2 PARAMS { return NAME##_body ARGS; }         \
  RET NAME##_clone_generic PARAMS { return NAME##_body ARGS; }                                           \
  RET NAME PARAMS {                                                                                \
    switch (::ptq4sam::kernels::cpu_isa()) {                                                       \
      case ::ptq4sam::kernels::CpuIsa::kAvx512: return NAME##_clone_avx512 ARGS;                         \
      case ::ptq4sam::kernels::CpuIsa::kAvx2: return NAME##_clone_avx2 ARGS;                             \
      default: return NAME##_clone_generic ARGS;                                                         \
    }                                                                                              \
  }
