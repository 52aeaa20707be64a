#pragma once
// Per-thread buffers that are kept and only grow. Every head of every block reuses them, where
// fresh buffers per call (hundreds per image, some of 50 MB) would fragment the heap and fault
// their pages in again. One enum names every kernel's buffers, so that two buffers a thread uses
// at once are never the same one.
#include <ATen/ATen.h>

#include <array>
#include <cstdint>

namespace ptq4sam::kernels {

enum class Scratch : int {
  // kernels/attention_cpu.cc
  kAttentionScores,
  kAttentionProbs,
  kAttentionQueries,
  // kernels/quantized_attention_cpu.cc
  kQueryCodes,
  kKeyCodes,
  kValueCodes,
  kQuerySums,
  kKeySums,
  kKeyColumnTerms,
  kValueColumnTerms,
  kRowTerms,
  kLogCodes,
  kQueryValues,
  kRelH,
  kRelW,
  kScores,
  kScoreRow,
  kProbCodes,
  kProbs,
  kValues,
  kOutput,
  kOutputRows,
  // kernels/quantized_linear_cpu.cc
  kLinearAccumulators,
  // oneDNN's scratchpads (kernels/matmul_cpu.cc, kernels/int_matmul_cpu.cc)
  kOnednnScratchpad,
  kCount
};

// This thread's buffer `which` (uint8), at least `bytes` long; what an earlier call left there
// is undefined. A pointer into it is valid until the next call for `which` on this thread asks
// for more; a tensor viewing it keeps its storage alive.
inline const at::Tensor& thread_scratch_buffer(Scratch which, int64_t bytes) {
  thread_local std::array<at::Tensor, size_t(Scratch::kCount)> buffers;
  at::Tensor& buffer = buffers[size_t(which)];
  if (!buffer.defined() || buffer.numel() < bytes) buffer = at::empty({bytes}, at::kByte);
  return buffer;
}

inline uint8_t* thread_scratch_bytes(Scratch which, int64_t bytes) {
  return thread_scratch_buffer(which, bytes).data_ptr<uint8_t>();
}

template <typename T>
T* thread_scratch(Scratch which, int64_t count) {
  return reinterpret_cast<T*>(thread_scratch_bytes(which, count * int64_t(sizeof(T))));
}

// A (rows, cols) float32 tensor on this thread's buffer `which`.
inline at::Tensor thread_scratch_tensor(Scratch which, int64_t rows, int64_t cols) {
  const int64_t bytes = rows * cols * int64_t(sizeof(float));
  return thread_scratch_buffer(which, bytes).narrow(0, 0, bytes).view(at::kFloat).view({rows, cols});
}

}  // namespace ptq4sam::kernels
