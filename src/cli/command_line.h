#pragma once
// The ptq4sam command line: every subcommand registered on one CLI11 app. The binary's main and
// the Python module (which runs `quantize` and `eval` in-process) share it, so both take the
// same options with the same checks.
#include <CLI/CLI.hpp>

#include <map>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace ptq4sam::cli {

class CommandLine {
 public:
  CommandLine();
  // Parses `args` (the program name first) and returns the chosen subcommand's job. Throws
  // CLI::ParseError (help, version and bad options alike: CLI::App::exit prints them).
  Runner parse(std::vector<std::string> args);
  CLI::App& app() { return app_; }

 private:
  CLI::App app_;
  std::map<std::string, Runner> runners_;
};

}  // namespace ptq4sam::cli
