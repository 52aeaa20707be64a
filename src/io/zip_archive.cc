#include "io/zip_archive.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace ptq4sam::io {
namespace {

constexpr uint32_t kEndOfCentralDirSig = 0x06054b50;
constexpr uint32_t kZip64EndOfCentralDirSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kCentralFileHeaderSig = 0x02014b50;
constexpr uint32_t kLocalFileHeaderSig = 0x04034b50;

uint16_t le16(const unsigned char* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t le32(const unsigned char* p) { return uint32_t(le16(p)) | (uint32_t(le16(p + 2)) << 16); }
uint64_t le64(const unsigned char* p) { return uint64_t(le32(p)) | (uint64_t(le32(p + 4)) << 32); }

}  // namespace

ZipArchive::ZipArchive(std::string path) : path_(std::move(path)) {
  file_.open(path_, std::ios::binary);
  if (!file_) throw Error(path_, "cannot open file");
  file_.seekg(0, std::ios::end);
  file_size_ = static_cast<uint64_t>(file_.tellg());
  if (file_size_ < 22) throw Error(path_, "not a zip archive (file too small; truncated?)");

  // The end-of-central-directory record sits in the last 22 + 65535 bytes.
  const uint64_t tail_size = std::min<uint64_t>(file_size_, 22 + 65535);
  std::vector<unsigned char> tail(tail_size);
  read_at(file_size_ - tail_size, tail.data(), tail_size);
  int64_t eocd = -1;
  for (int64_t i = int64_t(tail_size) - 22; i >= 0; --i) {
    if (le32(&tail[i]) == kEndOfCentralDirSig) { eocd = i; break; }
  }
  if (eocd < 0) {
    unsigned char magic[4] = {0, 0, 0, 0};
    read_at(0, magic, 4);
    if (le32(magic) == kLocalFileHeaderSig)
      throw Error(path_, "truncated zip archive (no end-of-central-directory record)");
    throw Error(path_, "not a zip archive (nor a legacy torch.save file)");
  }
  uint64_t count = le16(&tail[eocd + 10]);
  uint64_t dir_size = le32(&tail[eocd + 12]);
  uint64_t dir_offset = le32(&tail[eocd + 16]);
  if (count == 0xFFFF || dir_offset == 0xFFFFFFFF) {
    // ZIP64: the locator sits just before the classic record.
    const uint64_t eocd_abs = file_size_ - tail_size + uint64_t(eocd);
    if (eocd_abs < 20) throw Error(path_, "corrupt zip64 archive");
    unsigned char loc[20];
    read_at(eocd_abs - 20, loc, 20);
    if (le32(loc) != kZip64LocatorSig) throw Error(path_, "corrupt zip64 archive (no locator)");
    unsigned char rec[56];
    read_at(le64(loc + 8), rec, 56);
    if (le32(rec) != kZip64EndOfCentralDirSig) throw Error(path_, "corrupt zip64 end record");
    count = le64(rec + 32);
    dir_size = le64(rec + 40);
    dir_offset = le64(rec + 48);
  }
  if (dir_size > file_size_ || dir_offset > file_size_ - dir_size)
    throw Error(path_, "truncated zip archive (central directory beyond end of file)");

  std::vector<unsigned char> dir(dir_size);
  read_at(dir_offset, dir.data(), dir_size);
  size_t pos = 0;
  // Each entry takes at least 46 bytes of the directory: a count claiming more is not trusted.
  entries_.reserve(size_t(std::min<uint64_t>(count, dir_size / 46)));
  for (uint64_t i = 0; i < count; ++i) {
    if (pos + 46 > dir.size() || le32(&dir[pos]) != kCentralFileHeaderSig)
      throw Error(path_, "corrupt zip central directory");
    ZipEntry e;
    e.method = le16(&dir[pos + 10]);
    e.compressed_size = le32(&dir[pos + 20]);
    e.size = le32(&dir[pos + 24]);
    const uint16_t name_len = le16(&dir[pos + 28]);
    const uint16_t extra_len = le16(&dir[pos + 30]);
    const uint16_t comment_len = le16(&dir[pos + 32]);
    e.local_header_offset = le32(&dir[pos + 42]);
    if (pos + 46 + name_len + extra_len > dir.size()) throw Error(path_, "corrupt zip central directory");
    e.name.assign(reinterpret_cast<const char*>(&dir[pos + 46]), name_len);
    // ZIP64 extended information: only the fields saturated in the fixed header are present.
    size_t x = pos + 46 + name_len;
    const size_t x_end = x + extra_len;
    while (x + 4 <= x_end) {
      const uint16_t id = le16(&dir[x]);
      const uint16_t len = le16(&dir[x + 2]);
      if (id == 0x0001) {
        size_t f = x + 4;
        if (e.size == 0xFFFFFFFF && f + 8 <= x_end) { e.size = le64(&dir[f]); f += 8; }
        if (e.compressed_size == 0xFFFFFFFF && f + 8 <= x_end) { e.compressed_size = le64(&dir[f]); f += 8; }
        if (e.local_header_offset == 0xFFFFFFFF && f + 8 <= x_end) e.local_header_offset = le64(&dir[f]);
      }
      x += 4 + len;
    }
    entries_.push_back(std::move(e));
    pos += 46 + name_len + extra_len + comment_len;
  }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

void ZipArchive::read_at(uint64_t offset, void* dst, uint64_t size) {
  if (size > file_size_ || offset > file_size_ - size) throw Error(path_, "truncated file (read beyond end of file)");
  file_.clear();
  file_.seekg(static_cast<std::streamoff>(offset));
  file_.read(static_cast<char*>(dst), static_cast<std::streamsize>(size));
  if (!file_) throw Error(path_, "read error");
}

uint64_t ZipArchive::data_offset(const ZipEntry& entry) {
  unsigned char header[30];
  read_at(entry.local_header_offset, header, 30);
  if (le32(header) != kLocalFileHeaderSig) throw Error(path_, "corrupt zip entry '" + entry.name + "'");
  return entry.local_header_offset + 30 + le16(header + 26) + le16(header + 28);
}

uint64_t ZipArchive::verify(const ZipEntry& entry) {
  const uint64_t offset = data_offset(entry);
  if (entry.compressed_size > file_size_ || offset > file_size_ - entry.compressed_size)
    throw Error(path_, "truncated zip archive (entry '" + entry.name + "' extends beyond end of file)");
  if (entry.method == 0 && entry.compressed_size != entry.size) throw Error(path_, "corrupt zip entry '" + entry.name + "'");
  if (entry.method != 0 && entry.method != 8)
    throw Error(path_, "zip entry '" + entry.name + "' uses unsupported compression method " +
                           std::to_string(entry.method));
  // Deflate expands at most 1032 to 1: a larger claimed size is a lie, refused before any
  // buffer of that size exists.
  if (entry.method == 8 && entry.size / 1032 > entry.compressed_size + 1)
    throw Error(path_, "corrupt deflated zip entry '" + entry.name + "' (claims more than deflate can hold)");
  return offset;
}

void ZipArchive::read(const ZipEntry& entry, void* dst) {
  const uint64_t offset = verify(entry);
  if (entry.method == 0) {
    read_at(offset, dst, entry.size);
    return;
  }
  std::vector<unsigned char> packed(entry.compressed_size);
  read_at(offset, packed.data(), packed.size());
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) throw Error(path_, "zlib initialisation failed");
  zs.next_in = packed.data();
  zs.avail_in = static_cast<uInt>(packed.size());
  zs.next_out = static_cast<Bytef*>(dst);
  zs.avail_out = static_cast<uInt>(entry.size);
  const int rc = inflate(&zs, Z_FINISH);
  const uint64_t produced = zs.total_out;
  inflateEnd(&zs);
  if (rc != Z_STREAM_END || produced != entry.size)
    throw Error(path_, "corrupt deflated zip entry '" + entry.name + "'");
}

std::string ZipArchive::read_string(const ZipEntry& entry) {
  verify(entry);
  std::string s(entry.size, '\0');
  read(entry, s.data());
  return s;
}

namespace {
void put16(std::string& s, uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); }
void put32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
}  // namespace

void ZipWriter::add(const std::string& name, const void* data, uint64_t size) {
  if (size >= 0xFFFFFFFFull || offset_ >= 0xFFFFFFFFull) throw Error(path_, "zip entries over 4 GB are not supported");
  const uint32_t crc = uint32_t(crc32_z(crc32_z(0, nullptr, 0), static_cast<const Bytef*>(data), size));
  // Pad the local header's extra field so that the data starts 64-byte aligned.
  const uint64_t base = offset_ + 30 + name.size() + 4;
  const uint16_t pad = uint16_t((64 - base % 64) % 64);
  std::string h;
  put32(h, kLocalFileHeaderSig);
  put16(h, 20); put16(h, 0); put16(h, 0); put16(h, 0); put16(h, 0);
  put32(h, crc); put32(h, uint32_t(size)); put32(h, uint32_t(size));
  put16(h, uint16_t(name.size())); put16(h, uint16_t(4 + pad));
  h += name;
  put16(h, 0xFFFF); put16(h, pad);  // a private extra field holding the padding
  h.append(pad, 'Z');
  out_.write(h.data(), std::streamsize(h.size()));
  out_.write(static_cast<const char*>(data), std::streamsize(size));
  records_.push_back({name, crc, size, offset_});
  offset_ += h.size() + size;
}

void ZipWriter::finish() {
  std::string dir;
  for (const auto& r : records_) {
    put32(dir, kCentralFileHeaderSig);
    put16(dir, 20); put16(dir, 20); put16(dir, 0); put16(dir, 0); put16(dir, 0); put16(dir, 0);
    put32(dir, r.crc); put32(dir, uint32_t(r.size)); put32(dir, uint32_t(r.size));
    put16(dir, uint16_t(r.name.size())); put16(dir, 0); put16(dir, 0); put16(dir, 0); put16(dir, 0);
    put32(dir, 0); put32(dir, uint32_t(r.offset));
    dir += r.name;
  }
  std::string end;
  put32(end, kEndOfCentralDirSig);
  put16(end, 0); put16(end, 0); put16(end, uint16_t(records_.size())); put16(end, uint16_t(records_.size()));
  put32(end, uint32_t(dir.size())); put32(end, uint32_t(offset_)); put16(end, 0);
  out_.write(dir.data(), std::streamsize(dir.size()));
  out_.write(end.data(), std::streamsize(end.size()));
}

}  // namespace ptq4sam::io
