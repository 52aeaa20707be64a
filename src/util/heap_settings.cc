#include "util/heap_settings.h"

#include <malloc.h>

#include <climits>
#include <mutex>

namespace ptq4sam {
namespace {

std::mutex& settings_mutex() {
  static std::mutex mutex;
  return mutex;
}

HeapSettings& settings_in_force() {
  static HeapSettings settings;
  return settings;
}

}  // namespace

HeapSettings heap_settings() {
  const std::lock_guard<std::mutex> lock(settings_mutex());
  return settings_in_force();
}

void set_heap_settings(const HeapSettings& wanted) {
  const std::lock_guard<std::mutex> lock(settings_mutex());
  HeapSettings& now = settings_in_force();
  if (wanted.mmap_threshold != now.mmap_threshold) mallopt(M_MMAP_THRESHOLD, wanted.mmap_threshold);
  if (wanted.mmap_max != now.mmap_max) mallopt(M_MMAP_MAX, wanted.mmap_max);
  // mallopt takes an int; -1 (and anything past INT_MAX) means never trim.
  if (wanted.trim_threshold != now.trim_threshold)
    mallopt(M_TRIM_THRESHOLD, wanted.trim_threshold < 0 || wanted.trim_threshold > INT_MAX ? -1 : int(wanted.trim_threshold));
  if (wanted.top_pad != now.top_pad) mallopt(M_TOP_PAD, wanted.top_pad);
  now = wanted;
}

ScopedHeapSettings::ScopedHeapSettings(const HeapSettings& settings) : previous_(heap_settings()) {
  set_heap_settings(settings);
}

ScopedHeapSettings::~ScopedHeapSettings() {
  set_heap_settings(previous_);
  malloc_trim(0);
}

}  // namespace ptq4sam
