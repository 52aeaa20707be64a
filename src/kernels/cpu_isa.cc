#include "kernels/cpu_isa.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <dnnl.hpp>
#include <sstream>

#include "util/error.h"

namespace ptq4sam::kernels {
namespace {

struct ProcessLimits {
  CpuIsa isa = CpuIsa::kGeneric;
  bool vnni = false;
  std::string setting;  // PTQ4SAM_CPU as given
};

CpuIsa detected_isa() {
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return CpuIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
  return CpuIsa::kGeneric;
}

// The VNNI products oneDNN has at `isa`: AVX512-VNNI's, or AVX-VNNI's below AVX-512.
bool vnni_at(CpuIsa isa) {
  if (isa == CpuIsa::kAvx512) return __builtin_cpu_supports("avx512vnni");
  if (isa == CpuIsa::kAvx2) {
    // AVX-VNNI is CPUID leaf 7, subleaf 1, EAX bit 4 (not every compiler's builtin knows it).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 4)) != 0;
  }
  return false;
}

// oneDNN takes the same level; its own checks still pick what the CPU has below the cap.
void cap_onednn(CpuIsa isa, bool vnni) {
  dnnl::cpu_isa cap = dnnl::cpu_isa::all;
  if (isa == CpuIsa::kGeneric) cap = dnnl::cpu_isa::sse41;
  if (isa == CpuIsa::kAvx2) cap = vnni ? dnnl::cpu_isa::avx2_vnni : dnnl::cpu_isa::avx2;
  if (isa == CpuIsa::kAvx512 && !vnni) cap = dnnl::cpu_isa::avx512_core;
  if (cap == dnnl::cpu_isa::all) return;
  try {
    dnnl::set_max_cpu_isa(cap);
  } catch (const dnnl::error&) {
    // Only refused once oneDNN has run; the cap then cannot apply, and our kernels still obey.
  }
}

ProcessLimits read_limits() {
  ProcessLimits limits{detected_isa(), true, ""};
  const char* env = std::getenv("PTQ4SAM_CPU");
  if (env && *env) {
    limits.setting = env;
    std::stringstream items(limits.setting);
    std::string item;
    while (std::getline(items, item, ',')) {
      CpuIsa asked;
      if (item == "generic") {
        asked = CpuIsa::kGeneric;
      } else if (item == "avx2") {
        asked = CpuIsa::kAvx2;
      } else if (item == "avx512") {
        asked = CpuIsa::kAvx512;
      } else if (item == "novnni") {
        limits.vnni = false;
        continue;
      } else {
        throw Error("PTQ4SAM_CPU='" + limits.setting + "'",
                    "unknown item '" + item + "' (expected generic, avx2 or avx512, optionally with ,novnni)");
      }
      if (static_cast<int32_t>(asked) < static_cast<int32_t>(limits.isa)) limits.isa = asked;
    }
  }
  limits.vnni = limits.vnni && vnni_at(limits.isa);
  cap_onednn(limits.isa, limits.vnni);
  return limits;
}

const ProcessLimits& process_limits() {
  static const ProcessLimits limits = read_limits();
  return limits;
}

std::atomic<int32_t> scoped_isa{static_cast<int32_t>(CpuIsa::kAvx512)};
std::atomic<bool> scoped_vnni{true};

}  // namespace

const char* to_string(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kAvx2: return "avx2";
    default: return "generic";
  }
}

CpuIsa cpu_isa() {
  const int32_t process = static_cast<int32_t>(process_limits().isa);
  return static_cast<CpuIsa>(std::min(process, scoped_isa.load(std::memory_order_relaxed)));
}

bool cpu_vnni() { return process_limits().vnni && scoped_vnni.load(std::memory_order_relaxed); }

std::string describe_cpu() {
  std::string text = std::string(to_string(cpu_isa())) + (cpu_vnni() ? " + vnni" : "");
  if (!process_limits().setting.empty()) text += " (PTQ4SAM_CPU=" + process_limits().setting + ")";
  return text;
}

ScopedCpuLimit::ScopedCpuLimit(CpuIsa limit, bool vnni)
    : previous_isa_(scoped_isa.exchange(static_cast<int32_t>(limit))), previous_vnni_(scoped_vnni.exchange(vnni)) {}

ScopedCpuLimit::~ScopedCpuLimit() {
  scoped_isa.store(previous_isa_);
  scoped_vnni.store(previous_vnni_);
}

}  // namespace ptq4sam::kernels
