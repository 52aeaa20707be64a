// The README's layout table as a rule: each folder of src/ includes only the folders below it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>

namespace {

// What each folder may include besides itself (README.md, "Layout").
const std::map<std::string, std::set<std::string>>& allowed_includes() {
  static const std::map<std::string, std::set<std::string>> allowed = {
      {"util", {}},
      {"io", {"util"}},
      {"coco", {"util"}},
      {"kernels", {"util"}},
      {"sam", {"util", "io", "kernels"}},
      {"detect", {"util", "io", "kernels"}},
      {"quant", {"util", "io", "kernels", "sam"}},
      {"eval", {"util", "io", "kernels", "sam", "coco", "detect"}},
      {"cli", {"util", "io", "kernels", "sam", "coco", "detect", "quant", "eval"}},
  };
  return allowed;
}

TEST(Layout, EachFolderIncludesOnlyTheLayersBelowIt) {
  const std::filesystem::path src = std::filesystem::path(PTQ4SAM_SOURCE_DIR) / "src";
  const std::regex include(R"(^\s*#\s*include\s+"([a-z_]+)/)");
  size_t files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(src)) {
    if (!entry.is_regular_file()) continue;
    const std::filesystem::path relative = std::filesystem::relative(entry.path(), src);
    if (relative.parent_path().empty()) continue;  // src/pch.h
    const std::string folder = relative.begin()->string();
    const auto rule = allowed_includes().find(folder);
    ASSERT_NE(rule, allowed_includes().end()) << "src/" << folder << " is not in the layout table";
    ++files;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      std::smatch match;
      if (!std::regex_search(line, match, include)) continue;
      const std::string target = match[1];
      EXPECT_TRUE(target == folder || rule->second.count(target))
          << "src/" << relative.string() << " includes " << target << "/, above its layer";
    }
  }
  EXPECT_GT(files, 50u);
}

}  // namespace
