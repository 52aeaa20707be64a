#include "eval/prompts.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace ptq4sam::eval {
namespace {

using nlohmann::json;

// Clips an [x, y, w, h] box to the image; false when nothing of it is inside.
bool clip(const std::array<double, 4>& b, const coco::Image& image, BoxPrompt& p) {
  p.x0 = std::clamp(b[0], 0.0, double(image.width));
  p.y0 = std::clamp(b[1], 0.0, double(image.height));
  p.x1 = std::clamp(b[0] + b[2], 0.0, double(image.width));
  p.y1 = std::clamp(b[1] + b[3], 0.0, double(image.height));
  return p.x1 > p.x0 && p.y1 > p.y0;
}

}  // namespace

std::unordered_map<int64_t, std::vector<BoxPrompt>> load_box_prompts(const std::string& source,
                                                                     const coco::Dataset& gt,
                                                                     const PromptOptions& options) {
  std::unordered_map<int64_t, std::vector<BoxPrompt>> prompts;
  if (source == "gt") {
    for (const auto& a : gt.annotations) {
      if (a.iscrowd) continue;
      BoxPrompt p;
      p.category_id = a.category_id;
      if (clip(a.bbox, *gt.find_image(a.image_id), p)) prompts[a.image_id].push_back(p);
    }
  } else {
    const json root = coco::read_json_file(source);
    if (!root.is_array()) throw Error(source, "detections must be a JSON list (COCO results format)");
    for (size_t i = 0; i < root.size(); ++i) {
      const json& d = root[i];
      const std::string where = source + " detection " + std::to_string(i);
      if (!d.is_object() || !d.contains("image_id") || !d.contains("category_id") || !d.contains("bbox") ||
          !d.contains("score"))
        throw Error(where, "needs image_id, category_id, bbox and score");
      if (!d["image_id"].is_number_integer() || !d["category_id"].is_number_integer() || !d["score"].is_number())
        throw Error(where, "image_id and category_id must be integers, score a number");
      const int64_t image_id = d["image_id"].get<int64_t>();
      const coco::Image* image = gt.find_image(image_id);
      if (!image) throw Error(where, "unknown image_id " + std::to_string(image_id));
      BoxPrompt p;
      p.category_id = d["category_id"].get<int64_t>();
      if (!gt.category_index.count(p.category_id))
        throw Error(where, "unknown category_id " + std::to_string(p.category_id));
      p.score = d["score"].get<double>();
      const json& b = d["bbox"];
      if (!b.is_array() || b.size() != 4) throw Error(where, "bbox must be [x, y, w, h]");
      std::array<double, 4> box;
      for (int k = 0; k < 4; ++k) {
        if (!b[k].is_number() || !std::isfinite(b[k].get<double>())) throw Error(where, "bbox has a NaN or non-number");
        box[k] = b[k].get<double>();
      }
      if (!std::isfinite(p.score)) throw Error(where, "score is not finite");
      if (box[2] < 0 || box[3] < 0) throw Error(where, "bbox has a negative width or height");
      if (p.score < options.score_threshold) continue;
      if (clip(box, *image, p)) prompts[image_id].push_back(p);
    }
  }
  for (auto& [id, list] : prompts) {
    std::stable_sort(list.begin(), list.end(), [](const BoxPrompt& a, const BoxPrompt& b) { return a.score > b.score; });
    if (list.size() > size_t(options.max_dets)) list.resize(size_t(options.max_dets));
  }
  return prompts;
}

}  // namespace ptq4sam::eval
