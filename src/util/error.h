#pragma once
// The one error type of ptq4sam: a one-line message that names the file (or input) and the
// problem. The CLI prints it as is and exits non-zero.
#include <stdexcept>
#include <string>

namespace ptq4sam {

// `text` with its control bytes written as \xNN: messages quote names and values read from
// files, and a key holding a newline must not make a second line.
inline std::string one_line(const std::string& text) {
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte != 0x7f) {
      out += c;
    } else {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    }
  }
  return out;
}

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(one_line(message)) {}
  // "<where>: <problem>", where is usually a file path.
  Error(const std::string& where, const std::string& problem)
      : std::runtime_error(one_line(where + ": " + problem)) {}
};

}  // namespace ptq4sam
