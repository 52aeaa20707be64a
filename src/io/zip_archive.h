#pragma once
// Read-only access to the entries of a zip archive, as written by torch.save (stored entries,
// 64-byte aligned) or by any other zip tool (deflated entries are inflated with zlib).
#include <cstdint>
#include <fstream>
#include <ostream>
#include <string>
#include <vector>

namespace ptq4sam::io {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t local_header_offset = 0;
};

class ZipArchive {
 public:
  // Opens and indexes the archive. Throws ptq4sam::Error naming the file when it is missing,
  // not a zip archive, or truncated.
  explicit ZipArchive(std::string path);

  const std::string& path() const { return path_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when absent.
  const ZipEntry* find(const std::string& name) const;

  // Checks that the entry's data lies inside the file and its size is one its compression can
  // give, before a caller allocates entry.size bytes for it; returns where its data starts.
  // Throws ptq4sam::Error naming the file and entry otherwise.
  uint64_t verify(const ZipEntry& entry);
  // Reads the whole (uncompressed) entry into dst, which must hold entry.size bytes.
  void read(const ZipEntry& entry, void* dst);
  std::string read_string(const ZipEntry& entry);

 private:
  void read_at(uint64_t offset, void* dst, uint64_t size);
  uint64_t data_offset(const ZipEntry& entry);

  std::string path_;
  std::ifstream file_;
  uint64_t file_size_ = 0;
  std::vector<ZipEntry> entries_;
};

// Writes a zip archive of stored (uncompressed) entries to a stream, each entry's data 64-byte
// aligned as torch.save does. Entries and the whole archive must stay under 4 GB.
class ZipWriter {
 public:
  ZipWriter(std::ostream& out, std::string path) : out_(out), path_(std::move(path)) {}
  void add(const std::string& name, const void* data, uint64_t size);
  // Writes the central directory; call once, after the last add().
  void finish();

 private:
  struct Record {
    std::string name;
    uint32_t crc;
    uint64_t size, offset;
  };
  std::ostream& out_;
  std::string path_;
  uint64_t offset_ = 0;
  std::vector<Record> records_;
};

}  // namespace ptq4sam::io
