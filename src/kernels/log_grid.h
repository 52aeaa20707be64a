#pragma once
// AGQ's log grid, code = round(-tau * log2(x / s)), read off the bits of x / s for integer
// tau: the exponent gives tau codes per octave, and the mantissa, compared with the mantissas
// of 2^((j + 0.5) / tau), how many of the octave's rounding thresholds lie below it. Shared by
// the fake quantizer (quant/fake_quant.cc) and the integer attention, so they round alike.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace ptq4sam::kernels {

// For j < tau: the least float mantissa (23 bits) above the irrational 2^((j + 0.5) / tau).
inline std::vector<uint32_t> log_mantissa_thresholds(int tau) {
  std::vector<uint32_t> thresholds;
  for (int j = 0; j < tau; ++j) {
    const double threshold = std::exp2((j + 0.5) / tau);
    float f = float(threshold);
    if (double(f) < threshold) f = std::nextafter(f, 2.0f);
    uint32_t bits = 0;
    std::memcpy(&bits, &f, sizeof bits);
    thresholds.push_back(bits & 0x7fffffu);
  }
  return thresholds;
}

}  // namespace ptq4sam::kernels
