#pragma once
// Bounded scalar minimisation exactly as scipy.optimize.minimize_scalar(method='bounded')
// (fminbound: Brent's golden-section search with parabolic steps), so that the seed's
// MSEFast and AGQ observers land on the same points.
#include <functional>

namespace ptq4sam::quant {

struct BoundedMinimum {
  double x = 0;
  double fun = 0;
  int evaluations = 0;
};

// Minimises f over [lower, upper]; stops when the bracket is within xatol (plus a relative
// term) or after max_evaluations calls. With float32_losses, f's values are float32 numbers
// and their differences in the parabolic step are rounded to float32, as numpy does with the
// float32 arrays the seed's losses are.
BoundedMinimum minimize_bounded(const std::function<double(double)>& f, double lower, double upper,
                                bool float32_losses, double xatol = 1e-5, int max_evaluations = 500);

}  // namespace ptq4sam::quant
