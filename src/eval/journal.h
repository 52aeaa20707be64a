#pragma once
// An append-only journal of per-image results, so that a long evaluation killed at any point
// resumes where it stopped. One JSON object per line: the first names the run (its
// arguments), each following one holds one finished image. A torn last line (the process died
// mid-write) is cut off on reopening.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace ptq4sam::eval {

class Journal {
 public:
  // Opens or creates `path`. An existing journal must have been written for the same `run`
  // (else ptq4sam::Error: its results would not belong to this run).
  Journal(std::string path, const nlohmann::json& run);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  bool done(int64_t image_id) const { return entries_.count(image_id) > 0; }
  const nlohmann::json& entry(int64_t image_id) const { return entries_.at(image_id); }
  size_t size() const { return entries_.size(); }
  // Appends and flushes to disk before returning.
  void append(int64_t image_id, const nlohmann::json& results);

 private:
  void write_line(const std::string& line);

  std::string path_;
  int fd_ = -1;
  std::map<int64_t, nlohmann::json> entries_;
};

}  // namespace ptq4sam::eval
