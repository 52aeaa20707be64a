// The Python module `ptq4sam`: the official segment_anything SamPredictor's interface
// (predictor.py) and sam_model_registry over the C++ models, so that a script swaps one import.
// Arrays come out of the C++ tensors without a copy (a capsule owns the tensor); the GIL is
// released while the encoder and the decoder run. Bad arguments raise ValueError, everything
// else (a missing or corrupt file, ...) RuntimeError with the library's one-line message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cli/command_line.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "eval/automatic_mask_generator.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "sam/predictor.h"
#include "util/error.h"

namespace py = pybind11;

namespace ptq4sam::python {
namespace {

constexpr const char* kNoImageForPredict = "An image must be set with .set_image(...) before mask prediction.";
constexpr const char* kNoImageForEmbedding = "An image must be set with .set_image(...) to generate an embedding.";

py::dtype numpy_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return py::dtype::of<float>();
    case at::kDouble: return py::dtype::of<double>();
    case at::kHalf: return py::dtype("float16");
    case at::kBool: return py::dtype::of<bool>();
    case at::kByte: return py::dtype::of<uint8_t>();
    case at::kChar: return py::dtype::of<int8_t>();
    case at::kShort: return py::dtype::of<int16_t>();
    case at::kInt: return py::dtype::of<int32_t>();
    case at::kLong: return py::dtype::of<int64_t>();
    default: throw Error("to_numpy", std::string("no numpy dtype for ") + c10::toString(type));
  }
}

// A numpy view of `tensor`'s memory; the array keeps the tensor (and so its storage) alive.
py::array to_numpy(const at::Tensor& tensor) {
  at::Tensor t = tensor.scalar_type() == at::kBFloat16 ? tensor.to(at::kFloat) : tensor;
  const py::dtype dtype = numpy_dtype(t.scalar_type());
  std::vector<py::ssize_t> shape, strides;
  for (int64_t d = 0; d < t.dim(); ++d) {
    shape.push_back(t.size(d));
    strides.push_back(t.stride(d) * t.element_size());
  }
  auto owner = std::make_unique<at::Tensor>(std::move(t));
  void* data = owner->data_ptr();
  py::capsule keep_alive(owner.get(), [](void* p) { std::unique_ptr<at::Tensor>(static_cast<at::Tensor*>(p)); });
  owner.release();  // the capsule owns it now
  return py::array(dtype, shape, strides, data, keep_alive);
}

// A float64 C-contiguous copy of an array-like (list, tuple, any numeric array).
py::array_t<double, py::array::c_style> as_doubles(const py::object& value, const char* name) {
  // ensure() gives a null array, not an exception, for what numpy cannot convert.
  auto array = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(value);
  if (array) return array;
  throw py::value_error(std::string(name) + " must be a numeric array");
}

// ptq4sam::Error from a check of the arguments is the caller's mistake: ValueError.
template <typename Check>
auto checked_argument(Check&& check) {
  try {
    return check();
  } catch (const Error& e) {
    throw py::value_error(e.what());
  }
}

std::string describe(const py::array& a) {
  std::string shape;
  for (py::ssize_t d = 0; d < a.ndim(); ++d) shape += (d ? " x " : "") + std::to_string(a.shape(d));
  return "shape (" + shape + ") of " + std::string(py::str(a.dtype()));
}

// An H x W x 3 uint8 array, C-contiguous (a copy only when it is not).
py::array contiguous_image(const py::array& image, const std::string& where) {
  if (!image.dtype().is(py::dtype::of<uint8_t>()) || image.ndim() != 3 || image.shape(2) != 3 || image.shape(0) < 1 ||
      image.shape(1) < 1)
    throw py::value_error(where + ": expected an H x W x 3 uint8 image, got " + describe(image));
  return py::array_t<uint8_t, py::array::c_style>::ensure(image);
}

// The pixels as an RGB tensor: a view of the array, or its channels reversed for BGR. The
// array must outlive the view.
at::Tensor rgb_view(const py::array& pixels, const std::string& image_format) {
  if (image_format != "RGB" && image_format != "BGR")
    throw py::value_error("image_format must be 'RGB' or 'BGR', got '" + image_format + "'");
  const at::Tensor rgb = at::from_blob(const_cast<void*>(pixels.data()), {pixels.shape(0), pixels.shape(1), 3}, at::kByte);
  return image_format == "BGR" ? rgb.flip({2}) : rgb;
}

// A loaded model (sam_model_registry's result, SamPredictor's `model`): an official checkpoint
// or a quantized artifact, with the quantizers it runs with kept alive.
struct PySam {
  cli::LoadedModel loaded;
  std::string path;
};

std::shared_ptr<PySam> load_model(const std::string& path, const std::string& backend, std::optional<int> threads) {
  if (backend != "integer" && backend != "simulated")
    throw py::value_error("backend must be 'integer' or 'simulated', got '" + backend + "'");
  cli::init_runtime(threads.value_or(0));
  auto model = std::make_shared<PySam>();
  model->path = path;
  py::gil_scoped_release release;
  model->loaded = cli::load_model(path, backend == "integer" ? quant::Backend::kInteger : quant::Backend::kSimulated);
  return model;
}

// SamPredictor (segment_anything/predictor.py) over sam::Predictor.
class PySamPredictor {
 public:
  PySamPredictor(std::shared_ptr<PySam> model, std::optional<int> threads)
      : model_(std::move(model)), predictor_(model_->loaded.sam) {
    if (threads) cli::init_runtime(*threads);
  }

  void set_image(const py::array& image, const std::string& image_format) {
    const py::array pixels = contiguous_image(image, "set_image");
    const at::Tensor rgb = rgb_view(pixels, image_format);
    py::gil_scoped_release release;
    predictor_.set_image(rgb);
  }

  py::tuple predict(const py::object& point_coords, const py::object& point_labels, const py::object& box,
                    const py::object& mask_input, bool multimask_output, bool return_logits) const {
    if (!predictor_.is_image_set()) throw std::runtime_error(kNoImageForPredict);
    sam::Prompt prompt;
    if (!point_coords.is_none()) {
      if (point_labels.is_none()) throw py::value_error("point_labels must be supplied if point_coords is supplied.");
      prompt.points = points(point_coords, point_labels);
    }
    if (!box.is_none()) {
      const auto b = as_doubles(box, "box");
      if (b.size() != 4) throw py::value_error("box must hold 4 numbers (x0, y0, x1, y1), got " + describe(b));
      prompt.box = clipped_box(b.data()[0], b.data()[1], b.data()[2], b.data()[3], "box");
    }
    if (!mask_input.is_none()) prompt.mask_input = low_res_mask(mask_input);
    if (prompt.points.empty() && !prompt.box && !prompt.mask_input.defined())
      throw py::value_error("predict: give point_coords and point_labels, a box or a mask_input");
    const sam::Prediction pred = decode({std::move(prompt)}, multimask_output, return_logits);
    return py::make_tuple(to_numpy(pred.masks[0]), to_numpy(pred.iou[0]), to_numpy(pred.low_res[0]));
  }

  // Many boxes at once (predict_torch's batch, in original image pixels): N x 4 in,
  // (N x C x H x W masks, N x C scores, N x C x 256 x 256 logits) out.
  py::tuple predict_batch(const py::object& boxes, bool multimask_output, bool return_logits) const {
    if (!predictor_.is_image_set()) throw std::runtime_error(kNoImageForPredict);
    const auto b = as_doubles(boxes, "boxes");
    if (b.ndim() != 2 || b.shape(1) != 4 || b.shape(0) < 1)
      throw py::value_error("boxes must be an N x 4 array (x0, y0, x1, y1 per row), got " + describe(b));
    std::vector<sam::Prompt> prompts(b.shape(0));
    for (py::ssize_t i = 0; i < b.shape(0); ++i)
      prompts[i].box = clipped_box(b.at(i, 0), b.at(i, 1), b.at(i, 2), b.at(i, 3), "boxes[" + std::to_string(i) + "]");
    const sam::Prediction pred = decode(prompts, multimask_output, return_logits);
    return py::make_tuple(to_numpy(pred.masks), to_numpy(pred.iou), to_numpy(pred.low_res));
  }

  py::array get_image_embedding() const {
    if (!predictor_.is_image_set()) throw std::runtime_error(kNoImageForEmbedding);
    return to_numpy(predictor_.features());
  }

  void reset_image() { predictor_.reset_image(); }
  bool is_image_set() const { return predictor_.is_image_set(); }
  py::object features() const { return predictor_.is_image_set() ? py::object(to_numpy(predictor_.features())) : py::none(); }
  py::object original_size() const { return size_or_none(predictor_.original_size()); }
  py::object input_size() const { return size_or_none(predictor_.input_size()); }
  // One side (0 height, 1 width) of original_size or input_size; None before set_image.
  std::optional<int64_t> side(std::pair<int64_t, int64_t> (sam::Predictor::*size)() const, int index) const {
    if (!predictor_.is_image_set()) return std::nullopt;
    const auto hw = (predictor_.*size)();
    return index == 0 ? hw.first : hw.second;
  }
  std::shared_ptr<PySam> model() const { return model_; }

 private:
  py::object size_or_none(std::pair<int64_t, int64_t> size) const {
    if (!predictor_.is_image_set()) return py::none();
    return py::make_tuple(size.first, size.second);
  }

  std::pair<int64_t, int64_t> width_height() const {
    return {predictor_.original_size().second, predictor_.original_size().first};
  }

  sam::Box clipped_box(double x0, double y0, double x1, double y1, const std::string& where) const {
    const auto [width, height] = width_height();
    return checked_argument([&] { return sam::clip_box({x0, y0, x1, y1}, width, height, where); });
  }

  std::vector<sam::Point> points(const py::object& coords_in, const py::object& labels_in) const {
    const auto coords = as_doubles(coords_in, "point_coords");
    const auto labels = as_doubles(labels_in, "point_labels");
    if (coords.ndim() != 2 || coords.shape(1) != 2 || coords.shape(0) < 1)
      throw py::value_error("point_coords must be an N x 2 array (x, y per row), got " + describe(coords));
    if (labels.ndim() != 1 || labels.shape(0) != coords.shape(0))
      throw py::value_error("point_labels must hold one label per point (" + std::to_string(coords.shape(0)) +
                            "), got " + describe(labels));
    const auto [width, height] = width_height();
    std::vector<sam::Point> result;
    for (py::ssize_t i = 0; i < coords.shape(0); ++i) {
      const double label = labels.at(i);
      if (label != 0 && label != 1)
        throw py::value_error("point_labels[" + std::to_string(i) + "] must be 1 (foreground) or 0 (background)");
      const sam::Point point{coords.at(i, 0), coords.at(i, 1), int(label)};
      checked_argument([&] { sam::check_point(point, width, height, "point_coords[" + std::to_string(i) + "]"); });
      result.push_back(point);
    }
    return result;
  }

  // SamPredictor takes the previous call's low_res_masks[i][None]: 1 x 256 x 256 logits.
  at::Tensor low_res_mask(const py::object& value) const {
    const auto mask = as_doubles(value, "mask_input");
    const int64_t side = 4 * model_->loaded.sam->config.image_embedding_size();
    if (mask.ndim() < 2 || mask.size() != side * side || mask.shape(mask.ndim() - 1) != side ||
        mask.shape(mask.ndim() - 2) != side)
      throw py::value_error("mask_input must be 1 x " + std::to_string(side) + " x " + std::to_string(side) +
                            " logits, got " + describe(mask));
    return at::from_blob(const_cast<double*>(mask.data()), {1, side, side}, at::kDouble).to(at::kFloat);
  }

  sam::Prediction decode(const std::vector<sam::Prompt>& prompts, bool multimask_output, bool return_logits) const {
    py::gil_scoped_release release;
    return predictor_.predict(prompts, multimask_output, return_logits);
  }

  std::shared_ptr<PySam> model_;
  sam::Predictor predictor_;
};

// SamAutomaticMaskGenerator (automatic_mask_generator.py) over eval::generate_masks.
class PyMaskGenerator {
 public:
  PyMaskGenerator(std::shared_ptr<PySam> model, const eval::AmgOptions& options, const py::object& point_grids,
                  std::string output_mode)
      : model_(std::move(model)), options_(options), output_mode_(std::move(output_mode)) {
    if (!point_grids.is_none()) throw py::value_error("point_grids is not supported: give points_per_side");
    if (output_mode_ != "binary_mask" && output_mode_ != "uncompressed_rle" && output_mode_ != "coco_rle")
      throw py::value_error("Unknown output_mode " + output_mode_ + ".");
    checked_argument([&] { eval::check_options(options_); });
  }

  py::list generate(const py::array& image) const {
    const py::array pixels = contiguous_image(image, "generate");
    const at::Tensor rgb = rgb_view(pixels, "RGB");
    std::vector<eval::AmgMask> masks;
    {
      py::gil_scoped_release release;
      sam::Predictor predictor(model_->loaded.sam);
      masks = eval::generate_masks(predictor, rgb, options_);
    }
    py::list records;
    for (const auto& m : masks) records.append(record(m));
    return records;
  }

 private:
  static py::list xywh(const eval::AmgBox& b) {
    py::list box;
    for (const double v : {double(b[0]), double(b[1]), double(b[2] - b[0]), double(b[3] - b[1])}) box.append(v);
    return box;
  }

  py::object segmentation(const coco::Rle& rle) const {
    py::dict out;
    out["size"] = py::list(py::make_tuple(rle.h, rle.w));
    if (output_mode_ == "coco_rle") {
      out["counts"] = coco::to_string(rle);
      return std::move(out);
    }
    if (output_mode_ == "uncompressed_rle") {
      out["counts"] = py::list(py::cast(rle.counts));
      return std::move(out);
    }
    py::array_t<bool> mask({rle.h, rle.w});
    const std::vector<uint8_t> pixels = coco::decode(rle);
    std::copy(pixels.begin(), pixels.end(), mask.mutable_data());
    return std::move(mask);
  }

  py::dict record(const eval::AmgMask& m) const {
    py::dict r;
    r["segmentation"] = segmentation(m.segmentation);
    r["area"] = m.area;
    r["bbox"] = xywh(m.box);
    r["predicted_iou"] = double(m.predicted_iou);
    r["point_coords"] = py::list(py::make_tuple(py::list(py::make_tuple(m.point_x, m.point_y))));
    r["stability_score"] = double(m.stability_score);
    r["crop_box"] = xywh(m.crop_box);
    return r;
  }

  std::shared_ptr<PySam> model_;
  eval::AmgOptions options_;
  std::string output_mode_;
};

py::array read_image(const std::string& path) {
  at::Tensor image;
  {
    py::gil_scoped_release release;
    image = io::read_image_rgb(path);
  }
  return to_numpy(image);
}

py::dict load_checkpoint(const std::string& path) {
  io::StateDict state;
  {
    py::gil_scoped_release release;
    state = io::load_checkpoint(path);
  }
  py::dict tensors;
  for (const auto& name : state.keys()) tensors[py::str(name)] = to_numpy(state.at(name));
  return tensors;
}

std::string path_text(const py::object& path) {
  return py::str(py::module_::import("os").attr("fspath")(path)).cast<std::string>();
}

// Python's value of an option as the command line spells it: True/False for flags, a
// path-like as its path, a list repeats the option.
void append_option(std::vector<std::string>& args, const std::string& key, const py::handle& value) {
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  if (value.is_none()) return;
  if (py::isinstance<py::bool_>(value)) {
    args.push_back(flag + (value.cast<bool>() ? "=true" : "=false"));
  } else if (py::isinstance<py::list>(value) || py::isinstance<py::tuple>(value)) {
    for (const auto& item : value) append_option(args, key, item);
  } else {
    args.push_back(flag);
    args.push_back(py::hasattr(value, "__fspath__") ? path_text(py::reinterpret_borrow<py::object>(value))
                                                    : std::string(py::str(value)));
  }
}

// The progress callback for the length of one job, put back however the job ends.
class ProgressCallback {
 public:
  explicit ProgressCallback(py::object callback) : callback_(std::move(callback)) {
    if (callback_.is_none()) return;
    if (!PyCallable_Check(callback_.ptr())) throw py::value_error("progress must be callable as progress(label, done, total)");
    cli::progress_sink() = [this](const std::string& label, size_t done, size_t total) {
      py::gil_scoped_acquire gil;
      callback_(label, done, total);
    };
  }
  ~ProgressCallback() { cli::progress_sink() = nullptr; }
  ProgressCallback(const ProgressCallback&) = delete;
  ProgressCallback& operator=(const ProgressCallback&) = delete;

 private:
  py::object callback_;
};

// Runs a subcommand of the ptq4sam binary in this process with the binary's options (Python
// keyword names: calib_images for --calib-images). Bad options raise ValueError; a failed job
// RuntimeError with its message.
void run_subcommand(const std::string& command, const py::dict& options, const py::object& progress) {
  std::vector<std::string> args = {"ptq4sam", command};
  for (const auto& [key, value] : options) append_option(args, py::str(key), value);
  cli::CommandLine command_line;
  cli::Runner run;
  try {
    run = command_line.parse(args);
  } catch (const CLI::ParseError& e) {
    throw py::value_error(command + ": " + e.what());
  }
  const ProgressCallback callback(progress);
  int status = 0;
  {
    py::gil_scoped_release release;
    status = run();
  }
  if (status != 0) throw std::runtime_error(command + " failed (exit status " + std::to_string(status) + ")");
}

py::object read_json(const std::string& path) {
  const py::object text = py::module_::import("pathlib").attr("Path")(path).attr("read_text")();
  return py::module_::import("json").attr("loads")(text);
}

// A subcommand's required arguments (name, value) and the caller's keywords, as its options.
py::dict options_of(std::initializer_list<std::pair<const char*, py::object>> required, const py::kwargs& options) {
  py::dict all;
  for (const auto& [name, value] : required) all[name] = value;
  for (const auto& [key, value] : options) all[key] = value;
  return all;
}

py::object quantize(const py::object& model, const py::object& config, const py::object& calib_images, const py::object& out,
                    const py::object& report, const py::object& progress, const py::kwargs& options) {
  // The report is the result: without a path of its own it goes beside the artifact and stays.
  const std::string report_path = report.is_none() ? path_text(out) + ".report.json" : path_text(report);
  run_subcommand("quantize",
                 options_of({{"model", model}, {"config", config}, {"calib_images", calib_images}, {"out", out},
                             {"report", py::str(report_path)}},
                            options),
                 progress);
  return read_json(report_path);
}

py::object evaluate(const py::object& model, const py::object& images, const py::object& annotations, const py::object& out,
                    const py::object& progress, const py::kwargs& options) {
  run_subcommand("eval",
                 options_of({{"model", model}, {"images", images}, {"annotations", annotations}, {"out", out}}, options),
                 progress);
  return read_json(path_text(out) + "/metrics.json");
}

void bind_model(py::module_& m) {
  py::class_<PySam, std::shared_ptr<PySam>>(m, "Sam", "A SAM model: an official checkpoint or a quantized artifact")
      .def_property_readonly_static("image_format", [](const py::object&) { return "RGB"; })
      .def_property_readonly_static("mask_threshold", [](const py::object&) { return double(sam::Sam::kMaskThreshold); })
      .def_property_readonly("path", [](const PySam& s) { return s.path; })
      .def_property_readonly("is_quantized", [](const PySam& s) { return bool(s.loaded.quantized); })
      .def_property_readonly("image_size", [](const PySam& s) { return s.loaded.sam->config.encoder.img_size; })
      .def("__repr__", [](const PySam& s) { return "<ptq4sam.Sam " + s.loaded.sam->config.describe() + " from " + s.path + ">"; });

  m.def("load_model", &load_model, py::arg("path"), py::arg("backend") = "integer", py::arg("threads") = py::none(),
        "Loads an official SAM checkpoint (.pth) or a quantized artifact (.safetensors). backend: how an artifact "
        "runs, 'integer' (u8 x s8 kernels) or 'simulated' (fake-quant float32). threads: for every kernel of the "
        "process (None: all cores).");

  // segment_anything's registry: the architecture comes from the checkpoint's shapes, so every key builds
  // whatever the file holds.
  py::dict registry;
  for (const char* name : {"default", "vit_h", "vit_l", "vit_b"})
    registry[name] = py::cpp_function([](const std::string& checkpoint) { return load_model(checkpoint, "integer", std::nullopt); },
                                      py::arg("checkpoint"));
  m.attr("sam_model_registry") = registry;
}

// A model object as it is, or a path loaded (with `threads`, for every kernel of the process).
std::shared_ptr<PySam> as_model(const py::object& model, std::optional<int> threads = std::nullopt) {
  if (py::isinstance<PySam>(model)) return model.cast<std::shared_ptr<PySam>>();
  if (py::isinstance<py::str>(model) || py::hasattr(model, "__fspath__")) return load_model(path_text(model), "integer", threads);
  throw py::value_error("model must be a path (.pth or .safetensors) or a model from sam_model_registry / load_model");
}

void bind_mask_generator(py::module_& m) {
  const eval::AmgOptions d;
  py::class_<PyMaskGenerator, std::shared_ptr<PyMaskGenerator>>(
      m, "SamAutomaticMaskGenerator", "segment_anything.SamAutomaticMaskGenerator over ptq4sam's C++ runtime")
      .def(py::init([](const py::object& model, int64_t points_per_side, int64_t points_per_batch, double pred_iou_thresh,
                       double stability_score_thresh, double stability_score_offset, double box_nms_thresh,
                       int64_t crop_n_layers, double crop_nms_thresh, double crop_overlap_ratio,
                       int64_t crop_n_points_downscale_factor, const py::object& point_grids,
                       int64_t min_mask_region_area, const std::string& output_mode) {
             eval::AmgOptions o;
             o.points_per_side = points_per_side;
             o.points_per_batch = points_per_batch;
             o.pred_iou_thresh = pred_iou_thresh;
             o.stability_score_thresh = stability_score_thresh;
             o.stability_score_offset = stability_score_offset;
             o.box_nms_thresh = box_nms_thresh;
             o.crop_n_layers = crop_n_layers;
             o.crop_nms_thresh = crop_nms_thresh;
             o.crop_overlap_ratio = crop_overlap_ratio;
             o.crop_n_points_downscale_factor = crop_n_points_downscale_factor;
             o.min_mask_region_area = min_mask_region_area;
             return std::make_shared<PyMaskGenerator>(as_model(model), o, point_grids, output_mode);
           }),
           py::arg("model"), py::arg("points_per_side") = d.points_per_side, py::arg("points_per_batch") = d.points_per_batch,
           py::arg("pred_iou_thresh") = d.pred_iou_thresh, py::arg("stability_score_thresh") = d.stability_score_thresh,
           py::arg("stability_score_offset") = d.stability_score_offset, py::arg("box_nms_thresh") = d.box_nms_thresh,
           py::arg("crop_n_layers") = d.crop_n_layers, py::arg("crop_nms_thresh") = d.crop_nms_thresh,
           py::arg("crop_overlap_ratio") = d.crop_overlap_ratio,
           py::arg("crop_n_points_downscale_factor") = d.crop_n_points_downscale_factor,
           py::arg("point_grids") = py::none(), py::arg("min_mask_region_area") = d.min_mask_region_area,
           py::arg("output_mode") = "binary_mask",
           "The official generator's arguments and defaults; model: a path or a model from sam_model_registry.")
      .def("generate", &PyMaskGenerator::generate, py::arg("image"),
           "image: H x W x 3 uint8 RGB. Returns the official list of mask records (segmentation, area, bbox, "
           "predicted_iou, point_coords, stability_score, crop_box).");
}

void bind_predictor(py::module_& m) {
  py::class_<PySamPredictor, std::shared_ptr<PySamPredictor>>(m, "SamPredictor",
                                                             "segment_anything.SamPredictor over ptq4sam's C++ runtime")
      .def(py::init([](const py::object& model, std::optional<int> threads) {
             // A path loads with `threads`; a model loaded before takes them now, if given.
             const bool loaded = py::isinstance<PySam>(model);
             return std::make_shared<PySamPredictor>(as_model(model, threads), loaded ? threads : std::nullopt);
           }),
           py::arg("sam_model"), py::arg("threads") = py::none(),
           "sam_model: a path (.pth or .safetensors) or a model from sam_model_registry / load_model.")
      .def("set_image", &PySamPredictor::set_image, py::arg("image"), py::arg("image_format") = "RGB",
           "image: H x W x 3 uint8 array in image_format ('RGB' or 'BGR'). Runs the image encoder.")
      .def("predict", &PySamPredictor::predict, py::arg("point_coords") = py::none(), py::arg("point_labels") = py::none(),
           py::arg("box") = py::none(), py::arg("mask_input") = py::none(), py::arg("multimask_output") = true,
           py::arg("return_logits") = false,
           "Prompts in original image pixels: point_coords N x 2 with point_labels N (1 foreground, 0 background), "
           "box (x0, y0, x1, y1), mask_input 1 x 256 x 256 logits. Returns (masks C x H x W bool, or float32 logits "
           "with return_logits; iou_predictions C float32; low_res_masks C x 256 x 256 float32).")
      .def("predict_batch", &PySamPredictor::predict_batch, py::arg("boxes"), py::arg("multimask_output") = true,
           py::arg("return_logits") = false,
           "boxes N x 4 in original image pixels, decoded in batches. Returns (masks N x C x H x W, "
           "iou_predictions N x C, low_res_masks N x C x 256 x 256).")
      .def("get_image_embedding", &PySamPredictor::get_image_embedding, "The image embedding, 1 x 256 x 64 x 64 float32.")
      .def("reset_image", &PySamPredictor::reset_image)
      .def_property_readonly("is_image_set", &PySamPredictor::is_image_set)
      .def_property_readonly("features", &PySamPredictor::features)
      .def_property_readonly("original_size", &PySamPredictor::original_size)
      .def_property_readonly("input_size", &PySamPredictor::input_size)
      .def_property_readonly("orig_h", [](const PySamPredictor& p) { return p.side(&sam::Predictor::original_size, 0); })
      .def_property_readonly("orig_w", [](const PySamPredictor& p) { return p.side(&sam::Predictor::original_size, 1); })
      .def_property_readonly("input_h", [](const PySamPredictor& p) { return p.side(&sam::Predictor::input_size, 0); })
      .def_property_readonly("input_w", [](const PySamPredictor& p) { return p.side(&sam::Predictor::input_size, 1); })
      .def_property_readonly("model", &PySamPredictor::model);
}

}  // namespace
}  // namespace ptq4sam::python

PYBIND11_MODULE(ptq4sam, m) {
  using namespace ptq4sam::python;
  m.doc() = "Segment Anything in C++ with PTQ4SAM post-training quantization and an integer runtime";
  m.attr("__version__") = PTQ4SAM_VERSION;
  bind_model(m);
  bind_predictor(m);
  bind_mask_generator(m);
  m.def("quantize", &quantize, py::arg("model"), py::arg("config"), py::arg("calib_images"), py::arg("out"),
        py::kw_only(), py::arg("report") = py::none(), py::arg("progress") = py::none(),
        "PTQ4SAM calibration (and reconstruction) of an official checkpoint, as `ptq4sam quantize`: every other "
        "option of the command by its Python name (calib_annotations=, calib_prompts=, calib_count=, "
        "quant_encoder=True, no_recon=True, seed=, threads=, ...). Writes the artifact `out` and returns the "
        "report (a dict; written to `report`, or beside the artifact). progress(label, done, total) is called "
        "instead of the progress line.");
  m.def("evaluate", &evaluate, py::arg("model"), py::arg("images"), py::arg("annotations"), py::arg("out"),
        py::kw_only(), py::arg("progress") = py::none(),
        "COCO instance-segmentation evaluation with box prompts, as `ptq4sam eval`: every other option of the "
        "command by its Python name (prompts=, detector=, max_dets=, limit=, show_dir=, threads=, ...). Writes "
        "`out` (results_segm.json, metrics.json, journal.jsonl: a rerun resumes) and returns metrics.json as a dict.");
  m.def("read_image", &read_image, py::arg("path"),
        "A PNG or JPEG file as an H x W x 3 uint8 RGB array, decoded as the ptq4sam binary decodes it.");
  m.def("load_checkpoint", &load_checkpoint, py::arg("path"),
        "Every tensor of a torch.save checkpoint as {name: numpy array}, read without running pickled code.");
}
