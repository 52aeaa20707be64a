// The ptq4sam command-line tool.
#include <c10/util/Exception.h>

#include <cstdio>

#include "cli/command_line.h"
#include "util/error.h"

int main(int argc, char** argv) {
  ptq4sam::cli::CommandLine command_line;
  ptq4sam::cli::Runner run;
  try {
    run = command_line.parse(std::vector<std::string>(argv, argv + argc));
  } catch (const CLI::ParseError& e) {
    return command_line.app().exit(e);
  }
  try {
    return run();
  } catch (const ptq4sam::Error& e) {
    std::fprintf(stderr, "ptq4sam: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "ptq4sam: error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ptq4sam: error: %s\n", e.what());
    return 1;
  }
}
