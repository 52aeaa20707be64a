#pragma once
// Bounded scalar minimisation exactly as scipy.optimize.minimize_scalar(method='bounded')
// (fminbound: Brent's golden-section search with parabolic steps), so that the seed's
// MSEFast and AGQ observers land on the same points.
#include <functional>

namespace ptq4sam::quant {

struct BoundedMinimum {
  double x = 0;
  float fun = 0;  // the seed's losses are float32
  int evaluations = 0;
};

// Minimises f over [lower, upper]; stops when the bracket is within xatol (plus a relative
// term) or after max_evaluations calls.
BoundedMinimum minimize_bounded(const std::function<float(double)>& f, double lower, double upper,
                                double xatol = 1e-5, int max_evaluations = 500);

}  // namespace ptq4sam::quant
