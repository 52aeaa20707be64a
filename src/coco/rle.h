#pragma once
// COCO run-length encoded masks, as pycocotools' maskApi: column-major runs starting with a
// run of zeros, the compact string form, polygons rasterised the same way, area, bbox, merge
// and IoU (with the crowd rule). Every function gives pycocotools' numbers exactly.
#include <cstdint>
#include <string>
#include <vector>

namespace ptq4sam::coco {

struct Rle {
  int64_t h = 0, w = 0;
  std::vector<uint32_t> counts;
};

// mask: h x w bytes in row-major order (non-zero = inside).
Rle encode(const uint8_t* mask, int64_t h, int64_t w);
// The mask back, h x w row-major.
std::vector<uint8_t> decode(const Rle& rle);

// The compact string of COCO's compressed RLE ("counts" in result files), and back. Throws
// ptq4sam::Error (where = `where`) for characters outside the alphabet or runs that overflow.
std::string to_string(const Rle& rle);
Rle from_string(const std::string& counts, int64_t h, int64_t w, const std::string& where = "RLE");

// A polygon [x0, y0, x1, y1, ...] rasterised as pycocotools' rleFrPoly.
Rle from_polygon(const std::vector<double>& xy, int64_t h, int64_t w);
// A box [x, y, w, h] as pycocotools' rleFrBbox.
Rle from_bbox(const double* bb, int64_t h, int64_t w);

uint64_t area(const Rle& rle);
// [x, y, w, h] of the mask's pixels (zeros when empty), as rleToBbox.
std::vector<double> to_bbox(const Rle& rle);
// Union (or intersection) of masks of one size.
Rle merge(const std::vector<Rle>& rles, bool intersect = false);

// IoU of every detection with every ground truth as maskUtils.iou: ious[d * gts.size() + g];
// a crowd ground truth counts the intersection over the detection's area; -1 for masks of
// different sizes.
std::vector<double> iou(const std::vector<const Rle*>& dts, const std::vector<const Rle*>& gts,
                        const std::vector<uint8_t>& iscrowd);
// The same for [x, y, w, h] boxes.
std::vector<double> bbox_iou(const std::vector<const double*>& dts, const std::vector<const double*>& gts,
                             const std::vector<uint8_t>& iscrowd);

}  // namespace ptq4sam::coco
