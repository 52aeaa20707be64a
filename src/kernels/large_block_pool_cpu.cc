#include "kernels/large_block_pool.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>

namespace ptq4sam::kernels {
namespace {

constexpr size_t kPage = 4096;
// Committed in steps, so a strict-overcommit system is asked for what is used, not reserved.
constexpr size_t kCommitStep = size_t(64) << 20;
// The process pool's range: address space only, far above any inference's live set.
constexpr size_t kProcessReserve = size_t(64) << 30;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// The live pools, so that a deleter given only an address finds its pool. Plain atomics: they
// outlive every static object whose tensors may be freed while the program exits.
constexpr size_t kMaxPools = 16;
std::atomic<const LargeBlockPool*> live_pools[kMaxPools];

bool register_pool(const LargeBlockPool* pool) {
  for (auto& slot : live_pools) {
    const LargeBlockPool* empty = nullptr;
    if (slot.compare_exchange_strong(empty, pool)) return true;
  }
  return false;
}

void unregister_pool(const LargeBlockPool* pool) {
  for (auto& slot : live_pools) {
    const LargeBlockPool* mine = pool;
    slot.compare_exchange_strong(mine, nullptr);
  }
}

c10::DataPtr malloc_block(size_t bytes, c10::DeleterFnPtr deleter) {
  void* data = nullptr;
  if (posix_memalign(&data, 64, std::max<size_t>(bytes, 64)) != 0) throw std::bad_alloc();
  return {data, data, deleter, c10::Device(c10::DeviceType::CPU)};
}

}  // namespace

LargeBlockPool::LargeBlockPool(size_t reserve_bytes, size_t min_block) : min_block_(std::max<size_t>(min_block, 1)) {
  reserve_bytes = round_up(reserve_bytes, kPage);
  void* range = mmap(nullptr, reserve_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (range == MAP_FAILED) return;  // then every request goes to malloc
  base_ = static_cast<char*>(range);
  reserved_ = reserve_bytes;
  if (!register_pool(this)) {
    munmap(base_, reserved_);
    base_ = nullptr;
    reserved_ = 0;
  }
}

LargeBlockPool::~LargeBlockPool() {
  if (!base_) return;
  unregister_pool(this);
  munmap(base_, reserved_);
}

void LargeBlockPool::free_any(void* data) {
  for (const auto& slot : live_pools) {
    const LargeBlockPool* pool = slot.load();
    if (pool && pool->owns(data)) return pool->release(data);
  }
  std::free(data);
}

LargeBlockPool& LargeBlockPool::process_pool() {
  static LargeBlockPool* const pool = new LargeBlockPool(kProcessReserve);  // never deleted: see the header
  return *pool;
}

bool LargeBlockPool::commit_up_to(size_t end) const {
  if (end <= committed_) return true;
  const size_t target = std::min(reserved_, round_up(end, kCommitStep));
  if (mprotect(base_ + committed_, target - committed_, PROT_READ | PROT_WRITE) != 0) return false;
  committed_ = target;
  return true;
}

void LargeBlockPool::add_free(size_t offset, size_t size) const {
  free_by_offset_.emplace(offset, size);
  free_by_size_.emplace(size, offset);
}

void LargeBlockPool::remove_free(size_t offset, size_t size) const {
  free_by_offset_.erase(offset);
  const auto [first, last] = free_by_size_.equal_range(size);
  for (auto it = first; it != last; ++it)
    if (it->second == offset) {
      free_by_size_.erase(it);
      return;
    }
}

c10::DataPtr LargeBlockPool::allocate(size_t bytes) const {
  if (bytes < min_block_ || !base_) return malloc_block(bytes, &free_any);
  const size_t size = round_up(bytes, kPage);
  const std::lock_guard<std::mutex> lock(mutex_);
  size_t offset = 0;
  // Best fit among the holes, else extend the footprint (no hole ends at it: see release).
  const auto fit = free_by_size_.lower_bound(size);
  if (fit != free_by_size_.end()) {
    const size_t hole = fit->first;
    offset = fit->second;
    remove_free(offset, hole);
    if (hole > size) add_free(offset + size, hole - size);
  } else {
    offset = top_;
    if (offset + size > reserved_ || !commit_up_to(offset + size)) {
      ++stats_.fallbacks;
      return malloc_block(bytes, &free_any);
    }
    top_ = offset + size;
  }
  stats_.live_bytes += size;
  stats_.peak_live_bytes = std::max(stats_.peak_live_bytes, stats_.live_bytes);
  stats_.peak_footprint = std::max(stats_.peak_footprint, top_);
  in_use_.emplace(offset, size);
  return {base_ + offset, base_ + offset, &free_any, c10::Device(c10::DeviceType::CPU)};
}

void LargeBlockPool::release(const void* data) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  size_t offset = size_t(static_cast<const char*>(data) - base_);
  const auto used = in_use_.find(offset);
  if (used == in_use_.end()) return;  // not a block of ours: nothing to give back
  size_t size = used->second;
  in_use_.erase(used);
  stats_.live_bytes -= size;
  const auto next = free_by_offset_.find(offset + size);
  if (next != free_by_offset_.end()) {
    const size_t next_size = next->second;
    remove_free(offset + size, next_size);
    size += next_size;
  }
  const auto after = free_by_offset_.lower_bound(offset);
  if (after != free_by_offset_.begin()) {
    const auto before = std::prev(after);
    if (before->first + before->second == offset) {
      const size_t before_offset = before->first, before_size = before->second;
      remove_free(before_offset, before_size);
      offset = before_offset;
      size += before_size;
    }
  }
  if (offset + size == top_)  // so no hole ever ends at the footprint
    top_ = offset;
  else
    add_free(offset, size);
}

PoolStats LargeBlockPool::stats() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  PoolStats s = stats_;
  s.footprint = top_;
  s.free_blocks = free_by_offset_.size();
  return s;
}

void use_large_block_pool() {
  // Above LibTorch's own default (priority 0), so a later default registration cannot undo it.
  c10::SetCPUAllocator(&LargeBlockPool::process_pool(), /*priority=*/10);
}

}  // namespace ptq4sam::kernels
