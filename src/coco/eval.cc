#include "coco/eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>

#include "util/error.h"

namespace ptq4sam::coco {
namespace {

// numpy.linspace(start, stop, num): arange * step + start, the last value set to stop.
std::vector<double> linspace(double start, double stop, int num) {
  std::vector<double> y(num);
  const double step = (stop - start) / double(num - 1);
  for (int i = 0; i < num; ++i) y[i] = double(i) * step + start;
  y[num - 1] = stop;
  return y;
}

// Per (category, area range, image): what pycocotools' evaluateImg returns.
struct ImageEval {
  bool present = false;
  std::vector<double> dt_scores;
  std::vector<int64_t> dt_matches;  // T x D: matched gt id or 0
  std::vector<uint8_t> dt_ignore;   // T x D
  std::vector<uint8_t> gt_ignore;   // G
};

// Indices of a vector sorted by a key, stable (numpy's mergesort).
template <typename Key>
std::vector<size_t> stable_order(size_t n, Key key) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
  return order;
}

class CocoEval {
 public:
  CocoEval(const Dataset& gt, const std::vector<Annotation>& dts, IouType type, const EvalParams& p)
      : gt_(gt), dts_(dts), type_(type), p_(p) {
    if (p.image_ids.empty()) {
      for (const auto& img : gt.images) img_ids_.push_back(img.id);
    } else {
      img_ids_ = p.image_ids;
    }
    std::sort(img_ids_.begin(), img_ids_.end());
    img_ids_.erase(std::unique(img_ids_.begin(), img_ids_.end()), img_ids_.end());
    for (const auto& c : gt.categories) cat_ids_.push_back(c.id);
    std::sort(cat_ids_.begin(), cat_ids_.end());
    cat_ids_.erase(std::unique(cat_ids_.begin(), cat_ids_.end()), cat_ids_.end());
    std::map<int64_t, size_t> img_pos, cat_pos;
    for (size_t i = 0; i < img_ids_.size(); ++i) img_pos[img_ids_[i]] = i;
    for (size_t k = 0; k < cat_ids_.size(); ++k) cat_pos[cat_ids_[k]] = k;
    gts_.resize(img_ids_.size() * cat_ids_.size());
    dtsg_.resize(gts_.size());
    for (size_t i = 0; i < gt.annotations.size(); ++i) {
      const auto& a = gt.annotations[i];
      const auto im = img_pos.find(a.image_id);
      if (im != img_pos.end()) gts_[cell(cat_pos.at(a.category_id), im->second)].push_back(i);
    }
    for (size_t i = 0; i < dts.size(); ++i) {
      const auto& a = dts[i];
      const auto c = cat_pos.find(a.category_id);
      const auto im = img_pos.find(a.image_id);
      if (c == cat_pos.end() || im == img_pos.end()) continue;  // never evaluated, as in pycocotools
      dtsg_[cell(c->second, im->second)].push_back(i);
    }
  }

  EvalResult run() {
    const size_t K = cat_ids_.size(), A = p_.area_ranges.size(), I = img_ids_.size();
    std::vector<std::vector<double>> ious(K * I);
    std::vector<std::vector<size_t>> sorted_dts(K * I);
    for (size_t k = 0; k < K; ++k)
      for (size_t i = 0; i < I; ++i) compute_iou(cell(k, i), sorted_dts[cell(k, i)], ious[cell(k, i)]);
    evals_.assign(K * A * I, ImageEval());
    for (size_t k = 0; k < K; ++k)
      for (size_t a = 0; a < A; ++a)
        for (size_t i = 0; i < I; ++i)
          evaluate_image(cell(k, i), sorted_dts[cell(k, i)], ious[cell(k, i)], p_.area_ranges[a],
                         evals_[(k * A + a) * I + i]);
    EvalResult r;
    accumulate(r);
    summarize(r);
    return r;
  }

 private:
  size_t cell(size_t k, size_t i) const { return k * img_ids_.size() + i; }

  void compute_iou(size_t c, std::vector<size_t>& dt, std::vector<double>& out) const {
    const auto& g = gts_[c];
    dt = dtsg_[c];
    if (g.empty() && dt.empty()) return;
    const auto order = stable_order(dt.size(), [&](size_t j) { return -dts_[dt[j]].score; });
    std::vector<size_t> sorted;
    for (size_t j : order) sorted.push_back(dt[j]);
    if (sorted.size() > size_t(p_.max_dets.back())) sorted.resize(p_.max_dets.back());
    dt = sorted;
    std::vector<uint8_t> crowd;
    for (size_t j : g) crowd.push_back(gt_.annotations[j].iscrowd);
    if (type_ == IouType::kSegm) {
      std::vector<const Rle*> d, gg;
      for (size_t j : dt) d.push_back(&dts_[j].segmentation);
      for (size_t j : g) gg.push_back(&gt_.annotations[j].segmentation);
      out = iou(d, gg, crowd);
    } else {
      std::vector<const double*> d, gg;
      for (size_t j : dt) d.push_back(dts_[j].bbox.data());
      for (size_t j : g) gg.push_back(gt_.annotations[j].bbox.data());
      out = bbox_iou(d, gg, crowd);
    }
  }

  void evaluate_image(size_t c, const std::vector<size_t>& dt_all, const std::vector<double>& ious,
                      const std::array<double, 2>& range, ImageEval& e) const {
    const auto& g_all = gts_[c];
    if (g_all.empty() && dt_all.empty()) return;
    e.present = true;
    const size_t G = g_all.size(), n_ious_cols = G;
    std::vector<uint8_t> ignore(G);
    for (size_t j = 0; j < G; ++j) {
      const auto& g = gt_.annotations[g_all[j]];
      ignore[j] = g.iscrowd || g.area < range[0] || g.area > range[1];
    }
    const auto gt_order = stable_order(G, [&](size_t j) { return ignore[j]; });
    // dt_all is already sorted by score and cut at the largest maxDet.
    const size_t D = std::min(dt_all.size(), size_t(p_.max_dets.back()));
    const size_t T = p_.iou_thresholds.size();
    e.gt_ignore.resize(G);
    std::vector<uint8_t> crowd(G);
    std::vector<int64_t> gt_id(G);
    for (size_t j = 0; j < G; ++j) {
      e.gt_ignore[j] = ignore[gt_order[j]];
      crowd[j] = gt_.annotations[g_all[gt_order[j]]].iscrowd;
      gt_id[j] = gt_.annotations[g_all[gt_order[j]]].id;
    }
    e.dt_scores.resize(D);
    for (size_t d = 0; d < D; ++d) e.dt_scores[d] = dts_[dt_all[d]].score;
    e.dt_matches.assign(T * D, 0);
    e.dt_ignore.assign(T * D, 0);
    std::vector<int64_t> gt_matches(T * G, 0);
    if (!ious.empty()) {
      for (size_t t = 0; t < T; ++t) {
        for (size_t d = 0; d < D; ++d) {
          double best = std::min(p_.iou_thresholds[t], 1 - 1e-10);
          long m = -1;
          for (size_t j = 0; j < G; ++j) {
            if (gt_matches[t * G + j] > 0 && !crowd[j]) continue;
            if (m > -1 && e.gt_ignore[m] == 0 && e.gt_ignore[j] == 1) break;
            const double v = ious[d * n_ious_cols + gt_order[j]];
            if (v < best) continue;
            best = v;
            m = long(j);
          }
          if (m == -1) continue;
          e.dt_ignore[t * D + d] = e.gt_ignore[m];
          e.dt_matches[t * D + d] = gt_id[m];
          gt_matches[t * G + m] = dts_[dt_all[d]].id;
        }
      }
    }
    for (size_t d = 0; d < D; ++d) {
      const double a = dts_[dt_all[d]].area;
      const bool outside = a < range[0] || a > range[1];
      for (size_t t = 0; t < T; ++t)
        if (e.dt_matches[t * D + d] == 0 && outside) e.dt_ignore[t * D + d] = 1;
    }
  }

  void accumulate(EvalResult& r) const {
    const size_t T = p_.iou_thresholds.size(), R = p_.recall_thresholds.size(), K = cat_ids_.size(),
                 A = p_.area_ranges.size(), M = p_.max_dets.size(), I = img_ids_.size();
    r.precision.assign(T * R * K * A * M, -1.0);
    r.recall.assign(T * K * A * M, -1.0);
    const double eps = 2.220446049250313e-16;  // np.spacing(1)
    for (size_t k = 0; k < K; ++k) {
      for (size_t a = 0; a < A; ++a) {
        for (size_t m = 0; m < M; ++m) {
          const size_t max_det = size_t(p_.max_dets[m]);
          std::vector<const ImageEval*> E;
          for (size_t i = 0; i < I; ++i)
            if (evals_[(k * A + a) * I + i].present) E.push_back(&evals_[(k * A + a) * I + i]);
          if (E.empty()) continue;
          // Concatenate each image's first maxDet detections, then sort by score (stable).
          std::vector<double> scores;
          std::vector<std::pair<const ImageEval*, size_t>> origin;
          size_t npig = 0;
          for (const ImageEval* e : E) {
            const size_t n = std::min(e->dt_scores.size(), max_det);
            for (size_t d = 0; d < n; ++d) {
              scores.push_back(e->dt_scores[d]);
              origin.emplace_back(e, d);
            }
            for (const uint8_t ig : e->gt_ignore) npig += ig == 0;
          }
          if (npig == 0) continue;
          const auto order = stable_order(scores.size(), [&](size_t j) { return -scores[j]; });
          const size_t nd = order.size();
          for (size_t t = 0; t < T; ++t) {
            std::vector<double> rc(nd), pr(nd);
            double tp = 0, fp = 0;
            for (size_t j = 0; j < nd; ++j) {
              const auto& [e, d] = origin[order[j]];
              const size_t D = e->dt_scores.size();
              const bool matched = e->dt_matches[t * D + d] != 0;
              const bool ignored = e->dt_ignore[t * D + d] != 0;
              if (matched && !ignored) tp += 1;
              if (!matched && !ignored) fp += 1;
              rc[j] = tp / double(npig);
              pr[j] = tp / (fp + tp + eps);
            }
            r.recall[((t * K + k) * A + a) * M + m] = nd ? rc[nd - 1] : 0.0;
            for (size_t j = nd; j-- > 1;)
              if (pr[j] > pr[j - 1]) pr[j - 1] = pr[j];
            for (size_t ri = 0; ri < R; ++ri) {
              const size_t pi = size_t(std::lower_bound(rc.begin(), rc.end(), p_.recall_thresholds[ri]) - rc.begin());
              const double q = pi < nd ? pr[pi] : 0.0;
              // pycocotools stops filling at the first threshold beyond the last recall.
              if (pi >= nd) {
                for (size_t rj = ri; rj < R; ++rj) r.precision[((((t * R + rj) * K + k) * A + a) * M) + m] = 0.0;
                break;
              }
              r.precision[((((t * R + ri) * K + k) * A + a) * M) + m] = q;
            }
          }
        }
      }
    }
  }

  double summarize_one(const EvalResult& r, bool ap, double iou_thr, size_t area, int max_det) const {
    const size_t T = p_.iou_thresholds.size(), R = p_.recall_thresholds.size(), K = cat_ids_.size(),
                 A = p_.area_ranges.size(), M = p_.max_dets.size();
    size_t m = M;
    for (size_t j = 0; j < M; ++j)
      if (p_.max_dets[j] == max_det) m = j;
    if (m == M) return -1.0;  // pycocotools: an empty selection
    double sum = 0;
    size_t n = 0;
    for (size_t t = 0; t < T; ++t) {
      if (iou_thr >= 0 && p_.iou_thresholds[t] != iou_thr) continue;
      for (size_t k = 0; k < K; ++k) {
        if (ap) {
          for (size_t ri = 0; ri < R; ++ri) {
            const double v = r.precision[((((t * R + ri) * K + k) * A + area) * M) + m];
            if (v > -1) sum += v, ++n;
          }
        } else {
          const double v = r.recall[((t * K + k) * A + area) * M + m];
          if (v > -1) sum += v, ++n;
        }
      }
    }
    return n == 0 ? -1.0 : sum / double(n);
  }

  // pycocotools' _summarizeDets: the first AP at maxDets 100 (its default argument, whatever
  // params.maxDets holds), the other APs and the area ARs at maxDets[2], the ARs at each.
  void summarize(EvalResult& r) const {
    const std::array<int, 12> dets = summary_max_dets(p_.max_dets);
    r.stats = {summarize_one(r, true, -1, 0, dets[0]),   summarize_one(r, true, .5, 0, dets[1]),
               summarize_one(r, true, .75, 0, dets[2]),  summarize_one(r, true, -1, 1, dets[3]),
               summarize_one(r, true, -1, 2, dets[4]),   summarize_one(r, true, -1, 3, dets[5]),
               summarize_one(r, false, -1, 0, dets[6]),  summarize_one(r, false, -1, 0, dets[7]),
               summarize_one(r, false, -1, 0, dets[8]),  summarize_one(r, false, -1, 1, dets[9]),
               summarize_one(r, false, -1, 2, dets[10]), summarize_one(r, false, -1, 3, dets[11])};
  }

  const Dataset& gt_;
  const std::vector<Annotation>& dts_;
  IouType type_;
  const EvalParams& p_;
  std::vector<int64_t> img_ids_, cat_ids_;
  std::vector<std::vector<size_t>> gts_, dtsg_;  // per (category, image): annotation indices
  std::vector<ImageEval> evals_;
};

}  // namespace

EvalParams::EvalParams()
    : iou_thresholds(linspace(.5, 0.95, int(std::round((0.95 - .5) / .05)) + 1)),
      recall_thresholds(linspace(.0, 1.00, int(std::round((1.00 - .0) / .01)) + 1)) {}

std::array<int, 12> summary_max_dets(const std::vector<int>& max_dets) {
  if (max_dets.size() < 3) throw Error("COCOeval", "maxDets needs at least three values (pycocotools reads maxDets[2])");
  const int a = max_dets[0], b = max_dets[1], c = max_dets[2];
  return {100, c, c, c, c, c, a, b, c, c, c, c};
}

EvalResult evaluate(const Dataset& gt, const std::vector<Annotation>& dts, IouType type, const EvalParams& params) {
  summary_max_dets(params.max_dets);
  for (const int m : params.max_dets)
    if (m < 1) throw Error("COCOeval", "maxDets must be positive");
  return CocoEval(gt, dts, type, params).run();
}

std::string summary_text(const std::array<double, 12>& stats, const std::vector<int>& max_dets) {
  struct Line {
    bool ap;
    const char* iou;
    const char* area;
  };
  static const Line lines[12] = {
      {true, "0.50:0.95", "all"},    {true, "0.50", "all"},         {true, "0.75", "all"},
      {true, "0.50:0.95", "small"},  {true, "0.50:0.95", "medium"}, {true, "0.50:0.95", "large"},
      {false, "0.50:0.95", "all"},   {false, "0.50:0.95", "all"},   {false, "0.50:0.95", "all"},
      {false, "0.50:0.95", "small"}, {false, "0.50:0.95", "medium"}, {false, "0.50:0.95", "large"}};
  const std::array<int, 12> dets = summary_max_dets(max_dets);
  std::string out;
  char buf[160];
  for (int i = 0; i < 12; ++i) {
    const Line& l = lines[i];
    std::snprintf(buf, sizeof(buf), " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f\n",
                  l.ap ? "Average Precision" : "Average Recall", l.ap ? "(AP)" : "(AR)", l.iou, l.area, dets[size_t(i)],
                  stats[size_t(i)]);
    out += buf;
  }
  return out;
}

}  // namespace ptq4sam::coco
