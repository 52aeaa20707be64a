#include "cli/prompt_options.h"

#include <sstream>
#include <vector>

#include "util/error.h"

namespace ptq4sam::cli {
namespace {

std::vector<double> parse_numbers(const std::string& text, size_t count, const std::string& option, const char* form) {
  const Error malformed(option + " '" + text + "'", std::string("expected ") + form);
  std::vector<double> values;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    // Past `count` items the text is wrong whatever follows: stop before a long list is read.
    if (values.size() == count) throw malformed;
    try {
      size_t used = 0;
      values.push_back(std::stod(item, &used));
      if (used != item.size()) throw malformed;
    } catch (const std::exception&) {
      throw malformed;
    }
  }
  if (values.size() != count) throw malformed;
  return values;
}

}  // namespace

sam::Point parse_point_option(const std::string& text, int64_t width, int64_t height) {
  const std::string where = "--point '" + text + "'";
  const auto v = parse_numbers(text, 3, "--point", "X,Y,LABEL with LABEL 1 (foreground) or 0 (background)");
  if (v[2] != 0 && v[2] != 1) throw Error(where, "LABEL must be 1 (foreground) or 0 (background)");
  const sam::Point point{v[0], v[1], int(v[2])};
  sam::check_point(point, width, height, where);
  return point;
}

sam::Box parse_box_option(const std::string& text, int64_t width, int64_t height) {
  const auto v = parse_numbers(text, 4, "--box", "X0,Y0,X1,Y1");
  return sam::clip_box({v[0], v[1], v[2], v[3]}, width, height, "--box '" + text + "'");
}

}  // namespace ptq4sam::cli
