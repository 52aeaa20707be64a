#pragma once
// A CPU allocator for inference: large tensors (the forward passes' activations) come from one
// reserved address range, handed out best-fit and merged with their free neighbours when
// released.
//
// Why not glibc: an image embedding allocates ~1500 activation-sized blocks of a dozen sizes.
// Handing them back to the kernel makes every reuse pay page faults (a fifth of the encoder's
// time on this VM); keeping them in glibc's heap instead let it grow to 2.5x the live set's
// peak (1.1 GB for a W8A8 ViT-B whose tensors never exceed 0.45 GB at once), because small
// long-lived allocations settle between the large blocks. Here only large blocks share the
// range, so free neighbours merge and the touched footprint stays near the live peak; freed
// pages stay mapped, so reuse costs no page faults. Memory is never returned to the kernel.
#include <c10/core/Allocator.h>

#include <cstddef>
#include <map>
#include <mutex>

namespace ptq4sam::kernels {

struct PoolStats {
  size_t live_bytes = 0;       // handed out by the pool, not yet released
  size_t peak_live_bytes = 0;  // the most that ever was
  size_t footprint = 0;        // end of the highest block in use: the range's touched prefix now
  size_t peak_footprint = 0;   // the most the prefix ever was: pages touched (resident) so far
  size_t free_blocks = 0;      // holes below the footprint
  size_t fallbacks = 0;        // large requests served by malloc because the range was full
};

class LargeBlockPool final : public c10::Allocator {
 public:
  // Reserves `reserve_bytes` of address space (no memory is committed until used). Requests of
  // at least `min_block` bytes come from it, smaller ones from malloc, as do large ones once
  // the range is full.
  explicit LargeBlockPool(size_t reserve_bytes, size_t min_block = size_t(256) << 10);
  ~LargeBlockPool() override;
  LargeBlockPool(const LargeBlockPool&) = delete;
  LargeBlockPool& operator=(const LargeBlockPool&) = delete;

  // 64-byte aligned (4096 for pooled blocks); every tensor must be released before the pool.
  c10::DataPtr allocate(size_t bytes) const override;
  // Frees any block of any pool, or of malloc, by its address (LibTorch's raw_allocate path).
  c10::DeleterFnPtr raw_deleter() const override { return &free_any; }
  PoolStats stats() const;

  // The process-wide pool, made on first use and never destroyed (tensors held by other static
  // objects may be released while the program exits).
  static LargeBlockPool& process_pool();

 private:
  static void free_any(void* data);
  bool owns(const void* data) const { return data >= base_ && data < base_ + reserved_; }
  void release(const void* data) const;
  bool commit_up_to(size_t end) const;  // with the mutex held
  void add_free(size_t offset, size_t size) const;
  void remove_free(size_t offset, size_t size) const;

  char* base_ = nullptr;
  size_t reserved_ = 0;
  size_t min_block_;
  mutable std::mutex mutex_;
  mutable size_t committed_ = 0;
  mutable size_t top_ = 0;  // the footprint: everything at and above is untouched or free
  mutable PoolStats stats_;
  mutable std::map<size_t, size_t> free_by_offset_;     // offset -> size, below top_
  mutable std::multimap<size_t, size_t> free_by_size_;  // size -> offset, the same holes
  mutable std::map<size_t, size_t> in_use_;             // offset -> size
};

// Makes LibTorch's CPU tensors come from LargeBlockPool::process_pool().
void use_large_block_pool();

}  // namespace ptq4sam::kernels
