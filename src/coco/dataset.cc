#include "coco/dataset.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "util/error.h"

namespace ptq4sam::coco {
using nlohmann::json;

json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open file");
  try {
    return json::parse(in);
  } catch (const json::parse_error& e) {
    throw Error(path, "malformed JSON at byte " + std::to_string(e.byte));
  } catch (const json::exception&) {
    // The parser's other refusal: a number past double's range (e.g. 1E7055).
    throw Error(path, "malformed JSON (a number out of range)");
  }
}

namespace {

const json& field(const json& object, const char* name, const std::string& where) {
  if (!object.is_object() || !object.contains(name)) throw Error(where, std::string("missing field '") + name + "'");
  return object[name];
}

double number(const json& value, const char* name, const std::string& where) {
  if (!value.is_number()) throw Error(where, std::string("field '") + name + "' is not a number");
  const double v = value.get<double>();
  if (!std::isfinite(v)) throw Error(where, std::string("field '") + name + "' is not finite");
  return v;
}

int64_t integer(const json& object, const char* name, const std::string& where) {
  const json& v = field(object, name, where);
  if (!v.is_number_integer()) throw Error(where, std::string("field '") + name + "' is not an integer");
  return v.get<int64_t>();
}

std::array<double, 4> read_bbox(const json& value, const std::string& where) {
  if (!value.is_array() || value.size() != 4) throw Error(where, "bbox must be [x, y, w, h]");
  std::array<double, 4> b;
  for (int i = 0; i < 4; ++i) b[i] = number(value[i], "bbox", where);
  if (b[2] < 0 || b[3] < 0) throw Error(where, "bbox has a negative width or height");
  return b;
}

// pycocotools' annToRLE: polygons (merged), uncompressed RLE, or compressed RLE.
Rle read_segmentation(const json& segm, const Image& image, const std::string& where) {
  if (segm.is_array()) {
    if (segm.empty()) return Rle{image.height, image.width, {uint32_t(image.height * image.width)}};
    std::vector<Rle> parts;
    const bool boxes = segm[0].is_array() && segm[0].size() == 4;  // frPyObjects' rule
    for (const auto& poly : segm) {
      if (!poly.is_array()) throw Error(where, "polygon is not a list of numbers");
      std::vector<double> xy;
      for (const auto& v : poly) xy.push_back(number(v, "segmentation", where));
      // The rasteriser walks every edge in fifth-pixel steps: a coordinate far outside the
      // image (1e9) would take billions of steps and overflow its integers.
      const double limit = 8.0 * double(std::max(image.height, image.width)) + 1024.0;
      for (const double c : xy)
        if (!(std::abs(c) <= limit))
          throw Error(where, "polygon coordinate " + std::to_string(c) + " lies far outside the " +
                                 std::to_string(image.width) + "x" + std::to_string(image.height) + " image");
      if (boxes) {
        if (xy.size() != 4) throw Error(where, "malformed box segmentation");
        parts.push_back(from_bbox(xy.data(), image.height, image.width));
      } else {
        if (xy.size() < 6 || xy.size() % 2) throw Error(where, "polygon needs at least 3 x,y points");
        parts.push_back(from_polygon(xy, image.height, image.width));
      }
    }
    return merge(parts);
  }
  const json& size = field(segm, "size", where);
  const json& counts = field(segm, "counts", where);
  if (!size.is_array() || size.size() != 2 || !size[0].is_number_integer() || !size[1].is_number_integer())
    throw Error(where, "RLE size must be [height, width]");
  const int64_t h = size[0].get<int64_t>(), w = size[1].get<int64_t>();
  if (h != image.height || w != image.width) {
    std::ostringstream s;
    s << "RLE size " << h << "x" << w << " differs from image " << image.id << " (" << image.height << "x" << image.width << ")";
    throw Error(where, s.str());
  }
  if (counts.is_string()) return from_string(counts.get<std::string>(), h, w, where);
  if (!counts.is_array()) throw Error(where, "RLE counts must be a string or a list");
  Rle r{h, w, {}};
  uint64_t total = 0;
  for (const auto& c : counts) {
    if (!c.is_number_integer() || c.get<int64_t>() < 0) throw Error(where, "RLE counts must be non-negative integers");
    r.counts.push_back(uint32_t(c.get<int64_t>()));
    total += r.counts.back();
  }
  if (total != uint64_t(h * w)) throw Error(where, "RLE runs do not cover the image");
  return r;
}

}  // namespace

IouType parse_iou_type(const std::string& name) {
  if (name == "segm") return IouType::kSegm;
  if (name == "bbox") return IouType::kBbox;
  throw Error("--iou-type '" + name + "'", "expected segm or bbox");
}

const char* to_string(IouType type) { return type == IouType::kSegm ? "segm" : "bbox"; }

const Image* Dataset::find_image(int64_t id) const {
  const auto it = image_index.find(id);
  return it == image_index.end() ? nullptr : &images[it->second];
}

Dataset load_annotations(const std::string& path) {
  const json root = read_json_file(path);
  Dataset d;
  for (const auto& img : field(root, "images", path)) {
    Image image{integer(img, "id", path), integer(img, "height", path), integer(img, "width", path),
                img.value("file_name", std::string())};
    if (image.height <= 0 || image.width <= 0) throw Error(path, "image " + std::to_string(image.id) + " has no size");
    // Run lengths are 32-bit, as pycocotools'.
    if (image.height > (int64_t(1) << 20) || image.width > (int64_t(1) << 20) ||
        image.height * image.width >= (int64_t(1) << 32))
      throw Error(path, "image " + std::to_string(image.id) + " is too large (" + std::to_string(image.width) + "x" +
                            std::to_string(image.height) + ")");
    d.image_index[image.id] = d.images.size();
    d.images.push_back(std::move(image));
  }
  for (const auto& cat : field(root, "categories", path)) {
    Category c{integer(cat, "id", path), cat.value("name", std::string())};
    d.category_index[c.id] = d.categories.size();
    d.categories.push_back(std::move(c));
  }
  for (const auto& ann : field(root, "annotations", path)) {
    Annotation a;
    a.id = integer(ann, "id", path);
    const std::string where = path + " annotation " + std::to_string(a.id);
    a.image_id = integer(ann, "image_id", where);
    a.category_id = integer(ann, "category_id", where);
    const Image* image = d.find_image(a.image_id);
    if (!image) throw Error(where, "unknown image_id " + std::to_string(a.image_id));
    if (!d.category_index.count(a.category_id)) throw Error(where, "unknown category_id " + std::to_string(a.category_id));
    a.area = ann.contains("area") ? number(ann["area"], "area", where) : 0.0;
    a.iscrowd = ann.contains("iscrowd") && ann["iscrowd"].is_number() && ann["iscrowd"].get<double>() != 0;
    if (ann.contains("bbox")) a.bbox = read_bbox(ann["bbox"], where);
    if (ann.contains("segmentation")) {
      a.segmentation = read_segmentation(ann["segmentation"], *image, where);
      a.has_segmentation = true;
    }
    d.annotations.push_back(std::move(a));
  }
  return d;
}

std::vector<Annotation> load_results(const std::vector<std::string>& paths, const Dataset& gt, IouType type) {
  std::vector<Annotation> results;
  for (const auto& path : paths) {
    const json root = read_json_file(path);
    if (!root.is_array()) throw Error(path, "results must be a JSON list");
    for (size_t i = 0; i < root.size(); ++i) {
      const json& r = root[i];
      const std::string where = path + " result " + std::to_string(i);
      Annotation a;
      a.id = int64_t(results.size()) + 1;
      a.image_id = integer(r, "image_id", where);
      a.category_id = integer(r, "category_id", where);
      a.score = number(field(r, "score", where), "score", where);
      const Image* image = gt.find_image(a.image_id);
      if (!image) throw Error(where, "image_id " + std::to_string(a.image_id) + " is not in the ground truth (pycocotools: results do not correspond to current coco set)");
      if (type == IouType::kSegm) {
        a.segmentation = read_segmentation(field(r, "segmentation", where), *image, where);
        a.has_segmentation = true;
        a.area = double(area(a.segmentation));
        if (r.contains("bbox")) {
          a.bbox = read_bbox(r["bbox"], where);
        } else {
          const auto b = to_bbox(a.segmentation);
          std::copy(b.begin(), b.end(), a.bbox.begin());
        }
      } else {
        a.bbox = read_bbox(field(r, "bbox", where), where);
        a.area = a.bbox[2] * a.bbox[3];
      }
      results.push_back(std::move(a));
    }
  }
  return results;
}

}  // namespace ptq4sam::coco
