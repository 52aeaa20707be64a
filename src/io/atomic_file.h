#pragma once
// Writes a file so that readers see either the old content or the whole new one: the bytes go
// to a temporary file beside the target, which is then renamed over it.
#include <functional>
#include <ostream>
#include <string>
#include <string_view>

namespace ptq4sam::io {

// Throws ptq4sam::Error naming the path on failure; the temporary file is removed.
void write_file_atomic(const std::string& path, std::string_view bytes);

// The same for content produced by a writer (e.g. a checkpoint too big to hold twice).
void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& write);

// Creates the directory (and its parents) if needed.
void ensure_directory(const std::string& path);

}  // namespace ptq4sam::io
