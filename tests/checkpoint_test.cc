// The torch.save reader: dtypes, views, metadata, and every way a file can be broken.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include "io/checkpoint.h"
#include "io/pickle.h"
#include "sam/random_weights.h"
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "util/error.h"

namespace ptq4sam {
namespace {

using test::error_of;

TEST(Checkpoint, RoundTripsEveryDtypeAndView) {
  test::TempDir dir;
  io::StateDict state;
  state.insert("f32", at::randn({3, 4}));
  state.insert("f16", at::randn({5}).to(at::kHalf));
  state.insert("bf16", at::randn({2, 2}).to(at::kBFloat16));
  state.insert("i64", at::arange(7, at::kLong));
  state.insert("i32", at::arange(6, at::kInt).view({2, 3}));
  state.insert("u8", at::arange(10, at::kByte));
  state.insert("bool", at::tensor({1, 0, 1}, at::kByte).to(at::kBool));
  const at::Tensor base = at::arange(24, at::kFloat).view({4, 6});
  state.insert("base", base);
  state.insert("transposed_view", base.t());                  // same storage, strides (1, 6)
  state.insert("offset_view", base.narrow(0, 2, 2).narrow(1, 1, 3));  // storage offset 13
  for (const bool metadata : {true, false}) {
    const std::string path = dir.file(metadata ? "with_meta.pth" : "plain.pth");
    io::save_checkpoint(path, state, metadata);
    const io::StateDict loaded = io::load_checkpoint(path);
    ASSERT_EQ(loaded.keys(), state.keys());
    for (const auto& key : state.keys()) {
      SCOPED_TRACE(key);
      EXPECT_EQ(loaded.at(key).scalar_type(), state.at(key).scalar_type());
      EXPECT_EQ(loaded.at(key).sizes(), state.at(key).sizes());
      EXPECT_TRUE(at::equal(loaded.at(key), state.at(key)));
    }
    EXPECT_EQ(loaded.at("transposed_view").strides(), (std::vector<int64_t>{1, 6}));
    EXPECT_EQ(loaded.at("offset_view").storage_offset(), 13);
    // Views share the storage they were saved with.
    EXPECT_EQ(loaded.at("transposed_view").storage().data(), loaded.at("base").storage().data());
  }
}

TEST(Checkpoint, ReadsTheFixtureCheckpointAndGolden) {
  PTQ4SAM_REQUIRE_FIXTURES("sam_tiny");
  const io::StateDict state = io::load_checkpoint(fixtures + "/sam_tiny/checkpoint.pth");
  const std::string manifest = test::read_bytes(fixtures + "/sam_tiny/manifest.json");
  const auto entries = nlohmann::json::parse(manifest);
  ASSERT_EQ(state.size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(state.keys()[i], entries[i][0].get<std::string>());
    EXPECT_EQ(state.at(state.keys()[i]).sizes().vec(), entries[i][1].get<std::vector<int64_t>>());
  }
  const io::StateDict golden = io::load_checkpoint(fixtures + "/sam_tiny/golden.pth");
  EXPECT_EQ(golden.at("input_image").scalar_type(), at::kByte);
}

TEST(Checkpoint, MissingFile) {
  const std::string msg = error_of([] { io::load_checkpoint("/nonexistent/model.pth"); });
  EXPECT_NE(msg.find("/nonexistent/model.pth: cannot open file"), std::string::npos) << msg;
}

TEST(Checkpoint, NotAZip) {
  test::TempDir dir;
  test::write_bytes(dir.file("text.pth"), std::string(1000, 'x'));
  const std::string msg = error_of([&] { io::load_checkpoint(dir.file("text.pth")); });
  EXPECT_NE(msg.find("text.pth: not a zip archive"), std::string::npos) << msg;
}

TEST(Checkpoint, TruncatedAtEveryCut) {
  test::TempDir dir;
  io::StateDict state;
  state.insert("w", at::randn({64, 64}));
  io::save_checkpoint(dir.file("full.pth"), state);
  const std::string bytes = test::read_bytes(dir.file("full.pth"));
  for (const double fraction : {0.1, 0.5, 0.9, 0.999}) {
    const std::string path = dir.file("cut.pth");
    test::write_bytes(path, bytes.substr(0, size_t(bytes.size() * fraction)));
    const std::string msg = error_of([&] { io::load_checkpoint(path); });
    EXPECT_NE(msg.find("cut.pth: truncated"), std::string::npos) << fraction << ": " << msg;
  }
}

using test::int_tuple;
using test::legacy_file;
using test::legacy_header;
using test::long8;
using test::unicode;

TEST(Checkpoint, ReadsTheLegacyFormat) {
  test::TempDir dir;
  test::write_bytes(dir.file("legacy.pth"), legacy_file(4, {1.0f, 2.0f, 3.0f, 4.0f}));
  const io::StateDict state = io::load_checkpoint(dir.file("legacy.pth"));
  ASSERT_EQ(state.size(), 1u);
  EXPECT_TRUE(at::equal(state.at("w"), at::tensor({1.0f, 2.0f, 3.0f, 4.0f})));
}

TEST(Checkpoint, LegacyStorageLargerThanTheFileIsRefusedBeforeAllocating) {
  test::TempDir dir;
  // 1e9 floats (4 GB) claimed by a file of a few hundred bytes.
  test::write_bytes(dir.file("huge.pth"), legacy_file(1000000000, {1.0f, 2.0f, 3.0f, 4.0f}));
  const std::string msg = error_of([&] { io::load_checkpoint(dir.file("huge.pth")); });
  EXPECT_NE(msg.find("huge.pth: tensor storage '0' of 1000000000 elements is larger than what the file holds"),
            std::string::npos)
      << msg;
  // A count in the data that disagrees with the object's.
  test::write_bytes(dir.file("count.pth"), legacy_file(5, {1.0f, 2.0f, 3.0f, 4.0f}));
  const std::string count = error_of([&] { io::load_checkpoint(dir.file("count.pth")); });
  EXPECT_NE(count.find("count.pth: storage '0' holds 4 elements, expected 5"), std::string::npos) << count;
}

TEST(Checkpoint, ViewsThatOverflowOrExpandAreRefused) {
  test::TempDir dir;
  const std::vector<float> data(8, 1.0f);
  const struct {
    std::vector<int64_t> sizes, strides;
    const char* problem;
  } cases[] = {{{4}, {0}, "stride 0"},
               {{int64_t(1) << 62, 4}, {int64_t(1) << 62, 1}, "tensor view size overflows"},
               {{4, 4}, {1, 1}, "tensor view exceeds its storage"},  // 16 elements over 8 stored
               {{9}, {1}, "tensor view exceeds its storage"}};
  for (const auto& c : cases) {
    test::write_bytes(dir.file("view.pth"), legacy_file(8, data, c.sizes, c.strides));
    const std::string msg = error_of([&] { io::load_checkpoint(dir.file("view.pth")); });
    EXPECT_NE(msg.find(c.problem), std::string::npos) << msg;
  }
  test::write_bytes(dir.file("ok.pth"), legacy_file(8, data, {2, 4}, {4, 1}));
  EXPECT_EQ(io::load_checkpoint(dir.file("ok.pth")).at("w").sizes(), at::IntArrayRef({2, 4}));
}

TEST(Checkpoint, AMillionNestedTuplesAreAnErrorNotAStackOverflow) {
  test::TempDir dir;
  std::string pickle = "\x80\x02)";
  pickle += std::string(1000000, '\x85');  // TUPLE1, a million times: ((((...),),),)
  pickle += ".";
  test::write_bytes(dir.file("deep.pth"), legacy_header() + pickle);
  const std::string msg = error_of([&] { io::load_checkpoint(dir.file("deep.pth")); });
  EXPECT_NE(msg.find("deep.pth"), std::string::npos) << msg;
  // A dict holding itself (through the memo) is refused, not walked forever.
  const std::string self("\x80\x02}q\x00X\x01\x00\x00\x00"
                         "ah\x00s.",
                         15);
  test::write_bytes(dir.file("self.pth"), legacy_header() + self + "\x80\x02].");
  const std::string cyclic = error_of([&] { io::load_checkpoint(dir.file("self.pth")); });
  EXPECT_NE(cyclic.find("nested more than"), std::string::npos) << cyclic;
}

TEST(Checkpoint, LargeMemoIndicesAllocateNothing) {
  // LONG_BINPUT at 2^26 - 1 and 2^32 - 1: a few bytes must not size a memo of that length.
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  for (const uint32_t index : {(1u << 26) - 1, 0xffffffffu}) {
    const std::string data = std::string("\x80\x02Nr", 4) + std::string(reinterpret_cast<const char*>(&index), 4) +
                             std::string("h\x00.", 3);
    io::Unpickler unpickler("memo.pkl", data, nullptr);
    EXPECT_NE(error_of([&] { unpickler.load(); }).find("memo index out of range"), std::string::npos);
  }
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 256 * 1024) << "KiB of peak RSS";
}

// A list appended to itself, a dict holding itself: gone once the caller lets the root go.
TEST(Checkpoint, ValuesReferringToThemselvesAreFreed) {
  for (const std::string& data : {std::string("\x80\x02]q\x00h\x00" "a.", 9),  // EMPTY_LIST, BINPUT, BINGET, APPEND
                                  std::string("\x80\x02}q\x00K\x01h\x00s.", 11)}) {  // EMPTY_DICT, ... SETITEM
    io::PickleValuePtr root = io::Unpickler("cycle.pkl", data, nullptr).load();
    const std::weak_ptr<io::PickleValue> inner =
        root->kind == io::PickleValue::Kind::List ? root->items.at(0) : root->dict.at(0).second;
    EXPECT_EQ(inner.lock().get(), root.get());
    root.reset();
    EXPECT_TRUE(inner.expired());
  }
}

TEST(Checkpoint, CyclesOfAFailedLoadAreFreed) {
  // A list holding itself and a storage, then the data ends: nothing returns the tree, and the
  // reader must still free it (the fuzzer's leak-bf0c39... was of this kind).
  const at::Tensor kept = at::zeros({4});
  const auto unicode = [](const std::string& s) {  // BINUNICODE: 'X', a 4-byte length, the bytes
    return "X" + std::string(1, char(s.size())) + std::string(3, '\0') + s;
  };
  const std::string data = std::string("\x80\x02]q\x00h\x00" "a", 8) + "(" + unicode("storage") +
                           "ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") + "K\x04tQa";
  {
    io::Unpickler unpickler("cut.pkl", data, [&](const std::string&, at::ScalarType, int64_t) { return kept; });
    EXPECT_NE(error_of([&] { unpickler.load(); }).find("cut.pkl: unexpected end"), std::string::npos);
    EXPECT_GT(kept.use_count(), 1);  // the cycle holds it while the reader lives
  }
  EXPECT_EQ(kept.use_count(), 1);
}

TEST(Checkpoint, ForbiddenGlobalIsNamedAndNeverRun) {
  // A pickle that would call os.system: the reader must refuse it by name.
  const std::string pickle = std::string("\x80\x02") + "cos\nsystem\n" + "X\x04\x00\x00\x00true" + "\x85R.";
  io::Unpickler unpickler("evil.pth:archive/data.pkl", pickle, nullptr);
  const std::string msg = error_of([&] { unpickler.load(); });
  EXPECT_NE(msg.find("evil.pth:archive/data.pkl: forbidden global 'os.system'"), std::string::npos) << msg;
}

TEST(Checkpoint, CorruptPickleIsAnErrorNotACrash) {
  for (const std::string& pickle : {std::string("\x80\x02}q\x00(X\x03\x00\x00\x00"), std::string("\x80\x02\xff"),
                                   std::string("\x80\x02h\x05."), std::string(".")}) {
    io::Unpickler unpickler("bad.pkl", pickle, nullptr);
    EXPECT_NE(error_of([&] { unpickler.load(); }).find("bad.pkl: "), std::string::npos);
  }
}

TEST(Checkpoint, ModelKeyMismatchListsKeys) {
  const sam::SamConfig config = sam::vit_config(64, 2, 2, {1});
  io::StateDict state = sam::random_state_dict(config, 1);
  state.insert("extra.weight", at::zeros({1}));
  io::StateDict bad;
  for (const auto& key : state.keys())
    if (key != "mask_decoder.iou_token.weight") bad.insert(key, key == "image_encoder.neck.2.weight" ? at::zeros({3}) : state.at(key));
  bad.set_source("broken.pth");
  sam::Sam model(config);
  const std::string msg = error_of([&] { model.load_state_dict(bad); });
  EXPECT_NE(msg.find("broken.pth: missing keys: mask_decoder.iou_token.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected keys: extra.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("wrong shapes: image_encoder.neck.2.weight"), std::string::npos) << msg;
}

TEST(Checkpoint, ConfigOfOfficialSizesInferredFromShapes) {
  for (const auto& expected : {sam::vit_b_config(), sam::vit_l_config(), sam::vit_h_config()}) {
    // Uninitialised tensors of the right shapes: inference only reads shapes.
    const sam::Sam shapes(expected);
    io::StateDict state;
    for (const auto& [name, t] : shapes.state_tensors()) state.insert(name, t);
    const sam::SamConfig config = sam::infer_config(state);
    EXPECT_EQ(config.encoder.embed_dim, expected.encoder.embed_dim);
    EXPECT_EQ(config.encoder.depth, expected.encoder.depth);
    EXPECT_EQ(config.encoder.num_heads, expected.encoder.num_heads);
    EXPECT_EQ(config.encoder.mlp_dim, expected.encoder.mlp_dim);
    EXPECT_EQ(config.encoder.window_size, 14);
    EXPECT_EQ(config.encoder.global_attn_indexes, expected.encoder.global_attn_indexes);
    EXPECT_EQ(config.decoder.num_multimask_outputs, 3);
  }
}

// Shapes the config is divided by: a 0-wide patch, 0-wide relative positions, a decoder
// attention wider than the decoder. Each is a one-line error, not a division by zero.
TEST(Checkpoint, DegenerateShapesAreErrorsNotDivisions) {
  const sam::Sam shapes(sam::vit_config(64, 2, 2, {1}));
  const auto with = [&](const std::string& name, at::Tensor replacement) {
    io::StateDict state;
    state.set_source("odd.pth");
    for (const auto& [key, t] : shapes.state_tensors()) state.insert(key, key == name ? replacement : t);
    return error_of([&] { sam::infer_config(state); });
  };
  EXPECT_NE(with("image_encoder.patch_embed.proj.weight", at::zeros({64, 3, 0, 0})).find("has a dimension of size 0"),
            std::string::npos);
  EXPECT_NE(with("image_encoder.blocks.0.attn.rel_pos_h", at::zeros({27, 0})).find("odd.pth: tensor 'image_encoder.blocks.0.attn.rel_pos_h' has a dimension of size 0"),
            std::string::npos);
  EXPECT_NE(with("mask_decoder.transformer.final_attn_token_to_image.q_proj.weight", at::zeros({512, 256}))
                .find("does not divide 256"),
            std::string::npos);
}

TEST(Checkpoint, RandomModelSavedAndLoadedLikeAnOfficialOne) {
  test::TempDir dir;
  const sam::SamConfig config = sam::vit_config(96, 3, 3, {2});
  io::save_checkpoint(dir.file("random.pth"), sam::random_state_dict(config, 7));
  const auto model = sam::load_sam(dir.file("random.pth"));
  EXPECT_EQ(model->config.encoder.embed_dim, 96);
  EXPECT_EQ(model->config.encoder.num_heads, 3);
  EXPECT_EQ(model->config.encoder.mlp_dim, 384);
  EXPECT_EQ(model->config.encoder.global_attn_indexes, std::vector<int64_t>{2});
  torch::NoGradGuard no_grad;
  const at::Tensor image = at::rand({1, 3, 1024, 1024}) * 255;
  const at::Tensor embedding = model->image_encoder->forward(model->preprocess(image));
  EXPECT_EQ(embedding.sizes(), (std::vector<int64_t>{1, 256, 64, 64}));
  EXPECT_TRUE(embedding.isfinite().all().item<bool>());
}

}  // namespace
}  // namespace ptq4sam
