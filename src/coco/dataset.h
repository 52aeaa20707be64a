#pragma once
// COCO annotation files (instances_*.json) and result files, read into the form COCOeval
// works on: every segmentation as an RLE at its image's size, as pycocotools' annToRLE.
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/rle.h"

namespace ptq4sam::coco {

enum class IouType { kSegm, kBbox };
IouType parse_iou_type(const std::string& name);  // "segm" | "bbox"; throws otherwise
const char* to_string(IouType type);

struct Image {
  int64_t id = 0, height = 0, width = 0;
  std::string file_name;
};

struct Category {
  int64_t id = 0;
  std::string name;
};

struct Annotation {
  int64_t id = 0, image_id = 0, category_id = 0;
  double area = 0;
  bool iscrowd = false;
  std::array<double, 4> bbox{0, 0, 0, 0};  // x, y, w, h
  double score = 0;                        // results only
  Rle segmentation;                        // empty (h = w = 0) when the file has none
  bool has_segmentation = false;
};

struct Dataset {
  std::vector<Image> images;
  std::vector<Category> categories;
  std::vector<Annotation> annotations;
  std::unordered_map<int64_t, size_t> image_index, category_index;
  const Image* find_image(int64_t id) const;
};

// A whole JSON file. Throws ptq4sam::Error naming the file when it cannot be opened or is
// malformed (with the byte offset).
nlohmann::json read_json_file(const std::string& path);

// Reads a ground-truth file. Throws ptq4sam::Error naming the file for malformed JSON (with the
// byte offset), missing fields and annotations of unknown images or categories.
Dataset load_annotations(const std::string& path);

// Reads one or more result files (a JSON list each) against the ground truth, as
// COCO.loadRes: ids numbered from 1 in file order, iscrowd 0, segm areas from the RLE and
// bbox areas w * h, bboxes of segm results from the mask when absent. A result for an image
// the ground truth does not have is an error, as pycocotools' assertion; an empty list is
// accepted (pycocotools fails on it) and scores 0 wherever there is ground truth.
std::vector<Annotation> load_results(const std::vector<std::string>& paths, const Dataset& gt, IouType type);

}  // namespace ptq4sam::coco
