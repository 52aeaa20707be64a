#include "eval/journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include "util/error.h"

namespace ptq4sam::eval {

Journal::Journal(std::string path, const nlohmann::json& run) : path_(std::move(path)) {
  uint64_t good_bytes = 0;
  bool has_header = false;
  {
    std::ifstream in(path_, std::ios::binary);
    std::string line;
    uint64_t offset = 0;
    while (in && std::getline(in, line)) {
      const bool complete = !in.eof();  // a line without its '\n' was torn by a kill
      offset += line.size() + 1;
      if (!complete) break;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {  // a torn or overflowing line ends the journal
        break;
      }
      if (!has_header) {
        if (!j.contains("run") || j["run"] != run)
          throw Error(path_, "journal of a run with other arguments; use another --out or delete it");
        has_header = true;
      } else {
        if (!j.is_object() || !j.contains("image_id") || !j["image_id"].is_number_integer() || !j.contains("results"))
          throw Error(path_, "line at byte " + std::to_string(offset - line.size() - 1) +
                                 " is not a journal entry (needs image_id and results); delete the journal to start over");
        entries_[j["image_id"].get<int64_t>()] = j["results"];
      }
      good_bytes = offset;
    }
  }
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT, 0644);
  if (fd_ < 0) throw Error(path_, "cannot open journal for writing");
  if (::ftruncate(fd_, off_t(good_bytes)) != 0 || ::lseek(fd_, 0, SEEK_END) < 0)
    throw Error(path_, "cannot repair journal");
  if (!has_header) write_line(nlohmann::json({{"run", run}}).dump());
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

void Journal::write_line(const std::string& line) {
  const std::string data = line + "\n";
  size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd_, data.data() + written, data.size() - written);
    if (n <= 0) throw Error(path_, "journal write failed (disk full?)");
    written += size_t(n);
  }
  ::fdatasync(fd_);
}

void Journal::append(int64_t image_id, const nlohmann::json& results) {
  write_line(nlohmann::json({{"image_id", image_id}, {"results", results}}).dump());
  entries_[image_id] = results;
}

}  // namespace ptq4sam::eval
