#include "targets.h"

#include <unistd.h>

#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/prompt_options.h"
#include "coco/dataset.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "quant/artifact.h"
#include "quant/qconfig.h"
#include "util/error.h"

namespace ptq4sam::fuzz {
namespace {

// The readers take paths, as the CLI gives them: each input becomes one file, rewritten per
// input, in memory where the system has /dev/shm.
class InputFile {
 public:
  explicit InputFile(const std::string& suffix) {
    const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    path_ = std::string(dir) + "/ptq4sam_fuzz_" + std::to_string(getpid()) + suffix;
  }
  ~InputFile() { std::remove(path_.c_str()); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& write(const uint8_t* data, size_t size) {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f) throw std::runtime_error("fuzz: cannot write " + path_);
    if (size > 0 && std::fwrite(data, 1, size, f) != size) {
      std::fclose(f);
      throw std::runtime_error("fuzz: cannot write " + path_);
    }
    std::fclose(f);
    return path_;
  }

 private:
  std::string path_;
};

const std::string& input_path(const std::string& target, const uint8_t* data, size_t size) {
  static std::map<std::string, InputFile> files;
  auto it = files.find(target);
  if (it == files.end()) it = files.emplace(std::piecewise_construct, std::forward_as_tuple(target),
                                            std::forward_as_tuple("_" + target)).first;
  return it->second.write(data, size);
}

// The ground truth that results files are read against: two images, two categories.
const coco::Dataset& results_ground_truth() {
  static const coco::Dataset gt = [] {
    const nlohmann::json annotations = {
        {"images", {{{"id", 1}, {"width", 64}, {"height", 48}, {"file_name", "a.jpg"}},
                    {{"id", 2}, {"width", 32}, {"height", 32}, {"file_name", "b.jpg"}}}},
        {"categories", {{{"id", 1}, {"name", "cat"}}, {{"id", 3}, {"name", "dog"}}}},
        {"annotations", {{{"id", 1}, {"image_id", 1}, {"category_id", 1}, {"iscrowd", 0},
                          {"bbox", {4, 4, 20, 10}}, {"area", 200},
                          {"segmentation", {{4, 4, 24, 4, 24, 14, 4, 14}}}}}}};
    InputFile file("_gt.json");
    const std::string text = annotations.dump();
    return coco::load_annotations(file.write(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }();
  return gt;
}

// Reads one input; sets `where` to the name its errors must carry.
using Reader = std::function<void(const uint8_t*, size_t, std::string& where)>;

// A reader of files: the input written to the target's file, then `read` on its path.
std::pair<const std::string, Reader> file_target(const std::string& target,
                                                 std::function<void(const std::string& path)> read) {
  return {target, [target, read](const uint8_t* d, size_t n, std::string& where) {
            where = input_path(target, d, n);
            read(where);
          }};
}

void read_results(const std::string& path) {
  const coco::Dataset& gt = results_ground_truth();
  // A file that one type refuses may still reach the other's code.
  bool accepted = false;
  for (const coco::IouType type : {coco::IouType::kSegm, coco::IouType::kBbox}) {
    try {
      coco::load_results({path}, gt, type);
      accepted = true;
    } catch (const Error&) {
      if (type == coco::IouType::kBbox && !accepted) throw;
    }
  }
}

const std::map<std::string, Reader>& readers() {
  static const std::map<std::string, Reader> table = {
      file_target("checkpoint", [](const std::string& p) { io::load_checkpoint(p); }),
      file_target("safetensors", [](const std::string& p) { io::read_safetensors(p); }),
      file_target("artifact",
                  [](const std::string& p) {
                    quant::LoadOptions options;
                    options.backend = quant::Backend::kInteger;
                    quant::load_artifact(p, options);
                  }),
      file_target("npy", [](const std::string& p) { io::read_npy(p); }),
      file_target("coco_annotations", [](const std::string& p) { coco::load_annotations(p); }),
      file_target("coco_results", read_results),
      file_target("image", [](const std::string& p) { io::read_image_rgb(p); }),
      {"qconfig",
       [](const uint8_t* d, size_t n, std::string& where) {
         where = "fuzz.yaml";
         quant::parse_quant_config(std::string(reinterpret_cast<const char*>(d), n), where);
       }},
      {"prompt_options",
       [](const uint8_t* d, size_t n, std::string& where) {
         // "<point or box text>" after a first byte that picks which; a 640 x 480 image.
         if (n == 0) return;
         const std::string text(reinterpret_cast<const char*>(d) + 1, n - 1);
         where = text;
         if (d[0] & 1) {
           cli::parse_box_option(text, 640, 480);
         } else {
           cli::parse_point_option(text, 640, 480);
         }
       }},
  };
  return table;
}

}  // namespace

const std::vector<std::string>& target_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& entry : readers()) out.push_back(entry.first);
    return out;
  }();
  return names;
}

Outcome run_target(const std::string& target, const uint8_t* data, size_t size) {
  const auto it = readers().find(target);
  if (it == readers().end()) throw std::invalid_argument("fuzz: unknown target '" + target + "'");
  std::string where;
  try {
    it->second(data, size, where);
    return Outcome::kAccepted;
  } catch (const Error& e) {
    const std::string message = e.what();
    if (message.find('\n') != std::string::npos)
      throw ContractViolation(target + ": a multi-line error: " + message);
    if (message.find(one_line(where)) == std::string::npos)
      throw ContractViolation(target + ": the error does not name '" + one_line(where) + "': " + message);
    return Outcome::kRejected;
  } catch (const std::exception& e) {
    throw ContractViolation(target + ": not a ptq4sam::Error: " + one_line(e.what()));
  }
}

}  // namespace ptq4sam::fuzz
