#pragma once
// The one error type of ptq4sam: a one-line message that names the file (or input) and the
// problem. The CLI prints it as is and exits non-zero.
#include <stdexcept>
#include <string>

namespace ptq4sam {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  // "<where>: <problem>", where is usually a file path.
  Error(const std::string& where, const std::string& problem)
      : std::runtime_error(where + ": " + problem) {}
};

}  // namespace ptq4sam
