#pragma once
// Random but well-scaled SAM weights of any size, for benches and tests: no real checkpoint is
// needed to measure a ViT-B/L/H-shaped model.
#include <cstdint>
#include <vector>

#include "io/checkpoint.h"
#include "sam/sam.h"

namespace ptq4sam::sam {

// An encoder of the given size (MLP 4x, img 1024, patch 16, window 14) with SAM's prompt
// encoder and mask decoder; and the official configurations.
SamConfig vit_config(int64_t embed_dim, int64_t depth, int64_t num_heads, std::vector<int64_t> global_attn_indexes);
SamConfig vit_b_config();
SamConfig vit_l_config();
SamConfig vit_h_config();

// A state dict with every key of Sam(config), in module order: linear and conv weights
// N(0, 1/fan_in), LayerNorm weights near 1, small biases and position tables, the prompt
// encoder's Gaussian matrix N(0, 1). Deterministic for a seed.
io::StateDict random_state_dict(const SamConfig& config, uint64_t seed);

}  // namespace ptq4sam::sam
