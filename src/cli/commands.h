#pragma once
// Subcommands of the ptq4sam binary. Each registers its options on the CLI11 app and returns
// the function that runs it.
#include <CLI/CLI.hpp>

#include <functional>

namespace ptq4sam::cli {

using Runner = std::function<int()>;

Runner add_segment_command(CLI::App& app);

// Process-wide settings for a run: --threads (0 = all cores) for LibTorch and oneDNN, and an
// allocator that keeps activation buffers instead of returning them to the kernel.
void init_runtime(int threads);

}  // namespace ptq4sam::cli
