// The inference allocator: freed blocks are reused in place, free neighbours merge, the
// footprint follows the live set, and threads never get overlapping bytes.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "kernels/large_block_pool.h"

namespace ptq4sam {
namespace {

using kernels::LargeBlockPool;

constexpr size_t kMB = size_t(1) << 20;

TEST(LargeBlockPool, ReusesAFreedBlockInPlace) {
  LargeBlockPool pool(64 * kMB);
  c10::DataPtr a = pool.allocate(kMB);
  const c10::DataPtr b = pool.allocate(kMB);
  void* const where = a.get();
  a.clear();
  const c10::DataPtr c = pool.allocate(kMB - 100);
  EXPECT_EQ(c.get(), where);
  EXPECT_EQ(pool.stats().footprint, 2 * kMB);
  EXPECT_EQ(pool.stats().live_bytes, 2 * kMB);
}

// LibTorch's raw_allocate path (used inside some ATen kernels) frees by address alone.
TEST(LargeBlockPool, RawAllocationsFreeByAddress) {
  LargeBlockPool pool(64 * kMB);
  void* const large = pool.raw_allocate(2 * kMB);
  void* const small = pool.raw_allocate(100);
  EXPECT_EQ(pool.stats().live_bytes, 2 * kMB);
  pool.raw_deallocate(large);
  pool.raw_deallocate(small);
  EXPECT_EQ(pool.stats().live_bytes, 0u);
  EXPECT_EQ(pool.stats().footprint, 0u);
}

TEST(LargeBlockPool, MergesFreeNeighbours) {
  LargeBlockPool pool(64 * kMB);
  c10::DataPtr a = pool.allocate(kMB), b = pool.allocate(kMB);
  const c10::DataPtr c = pool.allocate(kMB);  // keeps the hole below the footprint
  void* const start = a.get();
  a.clear();
  b.clear();
  EXPECT_EQ(pool.stats().free_blocks, 1u);
  const c10::DataPtr both = pool.allocate(2 * kMB);
  EXPECT_EQ(both.get(), start);
  EXPECT_EQ(pool.stats().free_blocks, 0u);
  EXPECT_EQ(pool.stats().footprint, 3 * kMB);
}

TEST(LargeBlockPool, FootprintFollowsTheLiveSetAndPeakRemembersIt) {
  LargeBlockPool pool(64 * kMB);
  c10::DataPtr a = pool.allocate(kMB), b = pool.allocate(3 * kMB);
  a.clear();
  EXPECT_EQ(pool.stats().footprint, 4 * kMB);  // b still sits above the hole
  b.clear();
  EXPECT_EQ(pool.stats().footprint, 0u);
  EXPECT_EQ(pool.stats().free_blocks, 0u);
  EXPECT_EQ(pool.stats().peak_footprint, 4 * kMB);
  EXPECT_EQ(pool.stats().live_bytes, 0u);
}

TEST(LargeBlockPool, SmallRequestsAndAFullRangeGoToMalloc) {
  LargeBlockPool pool(4 * kMB);
  const c10::DataPtr small = pool.allocate(1000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.get()) % 64, 0u);
  EXPECT_EQ(pool.stats().live_bytes, 0u);
  const c10::DataPtr first = pool.allocate(3 * kMB);
  const c10::DataPtr second = pool.allocate(3 * kMB);  // does not fit the 4 MB range
  EXPECT_EQ(pool.stats().fallbacks, 1u);
  EXPECT_EQ(pool.stats().live_bytes, 3 * kMB);
  std::memset(second.get(), 1, 3 * kMB);  // usable memory all the same
  EXPECT_NE(first.get(), second.get());
}

// Threads allocating and freeing at once: each block keeps the pattern its owner wrote, and
// everything merges back to an empty pool.
TEST(LargeBlockPool, ThreadsNeverShareBytes) {
  LargeBlockPool pool(1024 * kMB);  // room for every thread's 16 blocks of <= 4.25 MB, holes and all
  const auto worker = [&pool](unsigned seed, bool* intact) {
    std::mt19937 rng(seed);
    std::vector<std::pair<c10::DataPtr, size_t>> held;
    for (int i = 0; i < 300; ++i) {
      if (held.size() >= 16 || (!held.empty() && rng() % 2 == 0)) {
        const size_t victim = rng() % held.size();
        const auto* bytes = static_cast<const unsigned char*>(held[victim].first.get());
        for (size_t k = 0; k < held[victim].second; k += 4096) *intact &= bytes[k] == (seed & 0xff);
        held.erase(held.begin() + std::ptrdiff_t(victim));
      }
      const size_t size = (256 << 10) + rng() % (4 * kMB);
      c10::DataPtr block = pool.allocate(size);
      std::memset(block.get(), int(seed & 0xff), size);
      held.emplace_back(std::move(block), size);
    }
  };
  bool intact[4] = {true, true, true, true};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 4; ++t) threads.emplace_back(worker, 17 + t, &intact[t]);
  for (auto& thread : threads) thread.join();
  for (const bool ok : intact) EXPECT_TRUE(ok);
  EXPECT_EQ(pool.stats().live_bytes, 0u);
  EXPECT_EQ(pool.stats().footprint, 0u);
  EXPECT_EQ(pool.stats().free_blocks, 0u);
  EXPECT_EQ(pool.stats().fallbacks, 0u);
}

}  // namespace
}  // namespace ptq4sam
