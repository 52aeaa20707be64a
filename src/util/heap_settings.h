#pragma once
// glibc's malloc settings that ptq4sam changes (mallopt). glibc cannot report them, so the
// process's settings are tracked here, from glibc's documented defaults, and changed only
// through these functions: a scope that changes them can then put back what was there before.
// (Once any is set, glibc's dynamic mmap threshold stays off: that cannot be undone.)
#include <cstddef>

namespace ptq4sam {

struct HeapSettings {
  // glibc's defaults (mallopt(3)) on 64-bit Linux.
  int mmap_threshold = 128 * 1024;
  int mmap_max = 65536;
  long trim_threshold = 128 * 1024;  // -1: never trim
  int top_pad = 128 * 1024;
};

// The settings in force.
HeapSettings heap_settings();

// Applies every field that differs from the settings in force.
void set_heap_settings(const HeapSettings& settings);

// `settings` while alive; then what was in force before, and the heap trimmed.
class ScopedHeapSettings {
 public:
  explicit ScopedHeapSettings(const HeapSettings& settings);
  ~ScopedHeapSettings();
  ScopedHeapSettings(const ScopedHeapSettings&) = delete;
  ScopedHeapSettings& operator=(const ScopedHeapSettings&) = delete;

 private:
  HeapSettings previous_;
};

}  // namespace ptq4sam
