#include "eval/detections.h"

#include <algorithm>

#include "util/error.h"

namespace ptq4sam::eval {

std::vector<int64_t> detector_category_ids(const std::vector<std::string>& classes, const coco::Dataset* gt) {
  const auto& coco_names = detect::coco_class_names();
  const auto& coco_ids = detect::coco_category_ids();
  std::vector<int64_t> ids(classes.size(), -1);
  for (size_t label = 0; label < classes.size(); ++label) {
    const auto coco = std::find(coco_names.begin(), coco_names.end(), classes[label]);
    const int64_t coco_id = coco == coco_names.end() ? -1 : coco_ids[size_t(coco - coco_names.begin())];
    if (!gt) {
      ids[label] = coco_id;
      continue;
    }
    for (const auto& c : gt->categories)
      if (c.name == classes[label]) ids[label] = c.id;
    if (ids[label] < 0 && gt->category_index.count(coco_id)) ids[label] = coco_id;
  }
  return ids;
}

namespace {

std::vector<detect::Detection> best_by_class(const std::vector<detect::Detection>& detections, int max_dets) {
  std::vector<size_t> by_score(detections.size());
  for (size_t i = 0; i < by_score.size(); ++i) by_score[i] = i;
  std::stable_sort(by_score.begin(), by_score.end(),
                   [&](size_t a, size_t b) { return detections[a].score > detections[b].score; });
  std::vector<char> chosen(detections.size(), 0);
  for (size_t i = 0; i < by_score.size() && (max_dets <= 0 || i < size_t(max_dets)); ++i) chosen[by_score[i]] = 1;
  // In the detector's order before grouping, as bbox2result keeps it inside a class.
  std::vector<detect::Detection> kept;
  for (size_t i = 0; i < detections.size(); ++i)
    if (chosen[i]) kept.push_back(detections[i]);
  return detect::order_by_class(kept);
}

}  // namespace

std::vector<BoxPrompt> prompts_from_detections(const std::vector<detect::Detection>& detections,
                                               const std::vector<int64_t>& category_ids,
                                               const DetectionPromptOptions& options) {
  std::vector<BoxPrompt> prompts;
  for (const auto& d : best_by_class(detections, options.max_dets)) {
    if (d.label < 0 || size_t(d.label) >= category_ids.size() || category_ids[size_t(d.label)] < 0) continue;
    BoxPrompt p;
    p.x0 = d.box.x0;
    p.y0 = d.box.y0;
    p.x1 = d.box.x1;
    p.y1 = d.box.y1;
    p.score = d.score;
    p.category_id = category_ids[size_t(d.label)];
    prompts.push_back(p);
  }
  if (prompts.empty() && options.placeholder_when_empty && !category_ids.empty())
    prompts.push_back(seed_placeholder(category_ids[0]));
  return prompts;
}

BoxPrompt seed_placeholder(int64_t category_id) {
  BoxPrompt p;
  p.score = 0.1;
  p.category_id = category_id;
  return p;
}

nlohmann::json detections_json(int64_t image_id, const std::vector<detect::Detection>& detections,
                               const std::vector<int64_t>& category_ids) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& d : detect::order_by_class(detections)) {
    if (d.label < 0 || size_t(d.label) >= category_ids.size() || category_ids[size_t(d.label)] < 0) continue;
    out.push_back({{"image_id", image_id},
                   {"category_id", category_ids[size_t(d.label)]},
                   {"bbox", {d.box.x0, d.box.y0, d.box.x1 - d.box.x0, d.box.y1 - d.box.y0}},
                   {"score", d.score}});
  }
  return out;
}

int64_t image_id_of(const std::filesystem::path& file) {
  const std::string stem = file.stem().string();
  size_t first = stem.size();
  while (first > 0 && stem[first - 1] >= '0' && stem[first - 1] <= '9') --first;
  const std::string digits = stem.substr(first);
  if (digits.empty()) return -1;
  return std::stoll(digits.substr(digits.size() > 18 ? digits.size() - 18 : 0));
}

std::vector<coco::Image> numbered_images(const std::string& folder) {
  if (!std::filesystem::is_directory(folder)) throw Error(folder, "is not a folder of images");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(folder))
    if (entry.is_regular_file() && image_id_of(entry.path()) >= 0) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  std::vector<coco::Image> images;
  for (const auto& file : files) images.push_back({image_id_of(file), 0, 0, file.filename().string()});
  return images;
}

}  // namespace ptq4sam::eval
