#pragma once
// Subcommands of the ptq4sam binary. Each registers its options on the CLI11 app and returns
// the function that runs it.
#include <CLI/CLI.hpp>

#include <functional>

namespace ptq4sam::cli {

using Runner = std::function<int()>;

Runner add_segment_command(CLI::App& app);

// Applies --threads (0 = all cores) to LibTorch and oneDNN.
void set_threads(int threads);

}  // namespace ptq4sam::cli
