#include "quant/brent.h"

#include <cmath>

namespace ptq4sam::quant {

BoundedMinimum minimize_bounded(const std::function<double(double)>& f, double lower, double upper,
                                bool float32_losses, double xatol, int max_evaluations) {
  const auto loss_difference = [float32_losses](double u, double v) {
    return float32_losses ? double(float(u) - float(v)) : u - v;
  };
  const double sqrt_eps = std::sqrt(2.2e-16);
  const double golden_mean = 0.5 * (3.0 - std::sqrt(5.0));
  double a = lower, b = upper;
  // Best point (xf, fx), second best (nfc, fnfc), third (fulc, ffulc).
  double fulc = a + golden_mean * (b - a);
  double nfc = fulc, xf = fulc;
  double rat = 0.0, e = 0.0;
  double fx = f(xf);
  int evaluations = 1;
  double ffulc = fx, fnfc = fx;
  double xm = 0.5 * (a + b);
  double tol1 = sqrt_eps * std::fabs(xf) + xatol / 3.0;
  double tol2 = 2.0 * tol1;
  const auto sign_or_one = [](double v) { return v > 0 ? 1.0 : v < 0 ? -1.0 : 1.0; };
  while (std::fabs(xf - xm) > (tol2 - 0.5 * (b - a))) {
    bool golden = true;
    if (std::fabs(e) > tol1) {
      // Parabola through the three best points.
      golden = false;
      double r = (xf - nfc) * loss_difference(fx, ffulc);
      double q = (xf - fulc) * loss_difference(fx, fnfc);
      double p = (xf - fulc) * q - (xf - nfc) * r;
      q = 2.0 * (q - r);
      if (q > 0.0) p = -p;
      q = std::fabs(q);
      r = e;
      e = rat;
      if (std::fabs(p) < std::fabs(0.5 * q * r) && p > q * (a - xf) && p < q * (b - xf)) {
        rat = (p + 0.0) / q;
        const double x = xf + rat;
        if ((x - a) < tol2 || (b - x) < tol2) rat = tol1 * sign_or_one(xm - xf);
      } else {
        golden = true;
      }
    }
    if (golden) {
      e = xf >= xm ? a - xf : b - xf;
      rat = golden_mean * e;
    }
    const double x = xf + sign_or_one(rat) * std::max(std::fabs(rat), tol1);
    const double fu = f(x);
    ++evaluations;
    if (fu <= fx) {
      if (x >= xf) a = xf;
      else b = xf;
      fulc = nfc, ffulc = fnfc;
      nfc = xf, fnfc = fx;
      xf = x, fx = fu;
    } else {
      if (x < xf) a = x;
      else b = x;
      if (fu <= fnfc || nfc == xf) {
        fulc = nfc, ffulc = fnfc;
        nfc = x, fnfc = fu;
      } else if (fu <= ffulc || fulc == xf || fulc == nfc) {
        fulc = x, ffulc = fu;
      }
    }
    xm = 0.5 * (a + b);
    tol1 = sqrt_eps * std::fabs(xf) + xatol / 3.0;
    tol2 = 2.0 * tol1;
    if (evaluations >= max_evaluations) break;
  }
  return {xf, fx, evaluations};
}

}  // namespace ptq4sam::quant
