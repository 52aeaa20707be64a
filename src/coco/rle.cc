#include "coco/rle.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "util/error.h"

namespace ptq4sam::coco {

Rle encode(const uint8_t* mask, int64_t h, int64_t w) {
  Rle r{h, w, {}};
  uint8_t previous = 0;
  uint32_t run = 0;
  for (int64_t x = 0; x < w; ++x) {
    for (int64_t y = 0; y < h; ++y) {
      const uint8_t v = mask[y * w + x] ? 1 : 0;
      if (v != previous) {
        r.counts.push_back(run);
        run = 0;
        previous = v;
      }
      ++run;
    }
  }
  r.counts.push_back(run);
  return r;
}

std::vector<uint8_t> decode(const Rle& rle) {
  std::vector<uint8_t> mask(size_t(rle.h * rle.w), 0);
  uint64_t j = 0;
  uint8_t v = 0;
  for (const uint32_t c : rle.counts) {
    for (uint32_t k = 0; k < c && j < mask.size(); ++k, ++j) {
      const int64_t x = int64_t(j) / rle.h, y = int64_t(j) % rle.h;
      mask[size_t(y * rle.w + x)] = v;
    }
    v = !v;
  }
  return mask;
}

std::string to_string(const Rle& rle) {
  std::string s;
  for (size_t i = 0; i < rle.counts.size(); ++i) {
    int64_t x = rle.counts[i];
    // pycocotools codes the difference to the count two back, from the fourth count on.
    if (i > 2) x -= int64_t(rle.counts[i - 2]);
    bool more = true;
    while (more) {
      char c = char(x & 0x1f);
      x >>= 5;
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s.push_back(char(c + 48));
    }
  }
  return s;
}

Rle from_string(const std::string& s, int64_t h, int64_t w, const std::string& where) {
  Rle r{h, w, {}};
  size_t p = 0;
  while (p < s.size()) {
    int64_t x = 0;
    int k = 0;
    bool more = true;
    while (more) {
      if (p >= s.size()) throw Error(where, "truncated RLE string");
      const int c = int(s[p]) - 48;
      if (c < 0 || c > 63) throw Error(where, "invalid character in RLE string");
      if (k > 12) throw Error(where, "RLE count overflows");
      x |= int64_t(c & 0x1f) << (5 * k);
      more = c & 0x20;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= int64_t(-1) * (int64_t(1) << (5 * k));
    }
    if (r.counts.size() > 2) x += int64_t(r.counts[r.counts.size() - 2]);
    if (x < 0 || x > int64_t(UINT32_MAX)) throw Error(where, "negative or oversized run in RLE string");
    r.counts.push_back(uint32_t(x));
  }
  uint64_t total = 0;
  for (const uint32_t c : r.counts) total += c;
  if (total != uint64_t(h * w))
    throw Error(where, "RLE runs cover " + std::to_string(total) + " pixels, size says " + std::to_string(h * w));
  return r;
}

Rle from_polygon(const std::vector<double>& xy, int64_t h, int64_t w) {
  // Upsample by 5 and walk the boundary densely, as rleFrPoly.
  const double scale = 5;
  const size_t k = xy.size() / 2;
  std::vector<int> x(k + 1), y(k + 1);
  for (size_t j = 0; j < k; ++j) x[j] = int(scale * xy[j * 2] + .5);
  x[k] = x[0];
  for (size_t j = 0; j < k; ++j) y[j] = int(scale * xy[j * 2 + 1] + .5);
  y[k] = y[0];
  std::vector<int> u, v;
  for (size_t j = 0; j < k; ++j) {
    int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const int dx = std::abs(xe - xs), dy = std::abs(ys - ye);
    const bool flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      std::swap(xs, xe);
      std::swap(ys, ye);
    }
    // A repeated vertex (dx = dy = 0) makes rleFrPoly's slope 0/0 and its one point's y the
    // x86 conversion of NaN; that point lies between two of the same x, so the boundary walk
    // below skips it whatever its y: a zero slope gives the same mask without the NaN.
    const double s = dx == 0 && dy == 0 ? 0.0 : dx >= dy ? double(ye - ys) / dx : double(xe - xs) / dy;
    if (dx >= dy) {
      for (int d = 0; d <= dx; ++d) {
        const int t = flip ? dx - d : d;
        u.push_back(t + xs);
        v.push_back(int(ys + s * t + .5));
      }
    } else {
      for (int d = 0; d <= dy; ++d) {
        const int t = flip ? dy - d : d;
        v.push_back(t + ys);
        u.push_back(int(xs + s * t + .5));
      }
    }
  }
  // Points on the y-boundary, downsampled.
  std::vector<uint32_t> a;
  for (size_t j = 1; j < u.size(); ++j) {
    if (u[j] == u[j - 1]) continue;
    double xd = double(u[j] < u[j - 1] ? u[j] : u[j] - 1);
    xd = (xd + .5) / scale - .5;
    if (std::floor(xd) != xd || xd < 0 || xd > double(w - 1)) continue;
    double yd = double(v[j] < v[j - 1] ? v[j] : v[j - 1]);
    yd = (yd + .5) / scale - .5;
    if (yd < 0) yd = 0;
    else if (yd > double(h)) yd = double(h);
    yd = std::ceil(yd);
    a.push_back(uint32_t(int(xd) * int(h) + int(yd)));
  }
  a.push_back(uint32_t(h * w));
  std::sort(a.begin(), a.end());
  uint32_t previous = 0;
  for (auto& t : a) {
    const uint32_t current = t;
    t -= previous;
    previous = current;
  }
  Rle r{h, w, {}};
  size_t j = 0;
  r.counts.push_back(a[j++]);
  while (j < a.size()) {
    if (a[j] > 0) {
      r.counts.push_back(a[j++]);
    } else {
      ++j;
      if (j < a.size()) r.counts.back() += a[j++];
    }
  }
  return r;
}

Rle from_bbox(const double* bb, int64_t h, int64_t w) {
  const double xs = bb[0], ys = bb[1], xe = xs + bb[2], ye = ys + bb[3];
  return from_polygon({xs, ys, xs, ye, xe, ye, xe, ys}, h, w);
}

uint64_t area(const Rle& rle) {
  uint64_t a = 0;
  for (size_t i = 1; i < rle.counts.size(); i += 2) a += rle.counts[i];
  return a;
}

std::vector<double> to_bbox(const Rle& rle) {
  const uint32_t h = uint32_t(rle.h), w = uint32_t(rle.w);
  const size_t m = (rle.counts.size() / 2) * 2;
  if (m == 0) return {0, 0, 0, 0};
  uint32_t xs = w, ys = h, xe = 0, ye = 0, cc = 0, xp = 0;
  for (size_t j = 0; j < m; ++j) {
    cc += rle.counts[j];
    const uint32_t t = cc - uint32_t(j % 2);
    const uint32_t y = t % h, x = (t - y) / h;
    if (j % 2 == 0) {
      xp = x;
    } else if (xp < x) {
      ys = 0;
      ye = h - 1;
    }
    xs = std::min(xs, x);
    xe = std::max(xe, x);
    ys = std::min(ys, y);
    ye = std::max(ye, y);
  }
  return {double(xs), double(ys), double(xe - xs + 1), double(ye - ys + 1)};
}

Rle merge(const std::vector<Rle>& rles, bool intersect) {
  if (rles.empty()) return Rle{};
  Rle acc = rles[0];
  for (size_t i = 1; i < rles.size(); ++i) {
    const Rle& b = rles[i];
    if (b.h != acc.h || b.w != acc.w) return Rle{};
    Rle out{acc.h, acc.w, {}};
    uint32_t ca = acc.counts.empty() ? 0 : acc.counts[0], cb = b.counts.empty() ? 0 : b.counts[0];
    bool va = false, vb = false, v = false;
    size_t ia = 1, ib = 1;
    uint32_t cc = 0, ct = 1;
    while (ct > 0) {
      const uint32_t c = std::min(ca, cb);
      cc += c;
      ct = 0;
      ca -= c;
      if (!ca && ia < acc.counts.size()) {
        ca = acc.counts[ia++];
        va = !va;
      }
      ct += ca;
      cb -= c;
      if (!cb && ib < b.counts.size()) {
        cb = b.counts[ib++];
        vb = !vb;
      }
      ct += cb;
      const bool vp = v;
      v = intersect ? (va && vb) : (va || vb);
      if (v != vp || ct == 0) {
        out.counts.push_back(cc);
        cc = 0;
      }
    }
    acc = std::move(out);
  }
  return acc;
}

std::vector<double> bbox_iou(const std::vector<const double*>& dts, const std::vector<const double*>& gts,
                             const std::vector<uint8_t>& iscrowd) {
  const size_t m = dts.size(), n = gts.size();
  std::vector<double> o(m * n, 0.0);
  for (size_t g = 0; g < n; ++g) {
    const double* gb = gts[g];
    const double ga = gb[2] * gb[3];
    const bool crowd = !iscrowd.empty() && iscrowd[g];
    for (size_t d = 0; d < m; ++d) {
      const double* db = dts[d];
      const double da = db[2] * db[3];
      const double wi = std::min(db[2] + db[0], gb[2] + gb[0]) - std::max(db[0], gb[0]);
      if (wi <= 0) continue;
      const double hi = std::min(db[3] + db[1], gb[3] + gb[1]) - std::max(db[1], gb[1]);
      if (hi <= 0) continue;
      const double i = wi * hi;
      const double u = crowd ? da : da + ga - i;
      o[d * n + g] = i / u;
    }
  }
  return o;
}

std::vector<double> iou(const std::vector<const Rle*>& dts, const std::vector<const Rle*>& gts,
                        const std::vector<uint8_t>& iscrowd) {
  const size_t m = dts.size(), n = gts.size();
  // Boxes first: masks whose boxes do not overlap have IoU 0 without a walk over their runs.
  std::vector<std::vector<double>> dbox(m), gbox(n);
  std::vector<const double*> dp(m), gp(n);
  for (size_t d = 0; d < m; ++d) dp[d] = (dbox[d] = to_bbox(*dts[d])).data();
  for (size_t g = 0; g < n; ++g) gp[g] = (gbox[g] = to_bbox(*gts[g])).data();
  std::vector<double> o = bbox_iou(dp, gp, iscrowd);
  for (size_t g = 0; g < n; ++g) {
    const Rle& gt = *gts[g];
    const bool crowd = !iscrowd.empty() && iscrowd[g];
    for (size_t d = 0; d < m; ++d) {
      double& out = o[d * n + g];
      if (out <= 0) continue;
      const Rle& dt = *dts[d];
      if (dt.h != gt.h || dt.w != gt.w) {
        out = -1;
        continue;
      }
      uint32_t ca = dt.counts[0], cb = gt.counts[0];
      bool va = false, vb = false;
      size_t a = 1, b = 1;
      uint64_t inter = 0, uni = 0;
      uint32_t ct = 1;
      while (ct > 0) {
        const uint32_t c = std::min(ca, cb);
        if (va || vb) {
          uni += c;
          if (va && vb) inter += c;
        }
        ct = 0;
        ca -= c;
        if (!ca && a < dt.counts.size()) {
          ca = dt.counts[a++];
          va = !va;
        }
        ct += ca;
        cb -= c;
        if (!cb && b < gt.counts.size()) {
          cb = gt.counts[b++];
          vb = !vb;
        }
        ct += cb;
      }
      if (inter == 0) uni = 1;
      else if (crowd) uni = area(dt);
      out = double(inter) / double(uni);
    }
  }
  return o;
}

}  // namespace ptq4sam::coco
