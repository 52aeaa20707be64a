#pragma once
// A one-line progress bar on stderr: done/total, rate and ETA, redrawn in place.
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

namespace ptq4sam::cli {

// Where the long jobs' progress goes instead of stderr when set: the Python module's callback
// gets (label, done, total) for each update. One per process, as stderr is.
using ProgressSink = std::function<void(const std::string& label, size_t done, size_t total)>;
inline ProgressSink& progress_sink() {
  static ProgressSink sink;
  return sink;
}

class Progress {
 public:
  Progress(std::string label, size_t total, std::string unit = "img")
      : label_(std::move(label)), unit_(std::move(unit)), total_(total) {}
  // `done` counts items finished in this run; `already` those found finished before.
  void update(size_t done, size_t already = 0) const {
    if (const auto& sink = progress_sink()) return sink(label_, done + already, total_);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = elapsed > 0 ? double(done) / elapsed : 0;
    const size_t left = total_ - std::min(total_, done + already);
    const long eta = rate > 0 ? long(double(left) / rate) : 0;
    std::fprintf(stderr, "\r%s [%zu/%zu] %.2f %s/s, ETA %02ld:%02ld:%02ld   ", label_.c_str(), done + already, total_,
                 rate, unit_.c_str(), eta / 3600, (eta / 60) % 60, eta % 60);
    std::fflush(stderr);
  }
  void finish() const {
    if (!progress_sink()) std::fprintf(stderr, "\n");
  }

 private:
  std::string label_, unit_;
  size_t total_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace ptq4sam::cli
