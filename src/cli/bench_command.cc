// `ptq4sam bench`: image-embedding and decoder time, peak RSS and size of one or more models,
// a table row each. Several models are measured one process each, so that every row's peak
// RSS is that model's own, and in rounds taking turns, so that a machine whose speed drifts
// (this VM's by 10-20% within minutes) slows every model alike.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/commands.h"
#include "detect/detector.h"
#include "io/checkpoint.h"
#include "sam/predictor.h"
#include "util/error.h"

extern char** environ;

namespace ptq4sam::cli {
namespace {

struct BenchOptions {
  std::vector<std::string> models, detectors;
  quant::Backend backend = quant::Backend::kInteger;
  int runs = 3, rounds = 1, warmup = 1, threads = 0, boxes = 8;
  bool json_row = false;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // KiB on Linux
}

// Bytes of the weights the model holds: every parameter and buffer (each storage once) and the
// integer layers' codes, scales and sums.
int64_t resident_weight_bytes(const LoadedModel& loaded) {
  std::set<const void*> seen;
  int64_t bytes = 0;
  for (const auto& [name, tensor] : loaded.sam->state_tensors()) {
    const auto& storage = tensor.storage();
    if (seen.insert(storage.data()).second) bytes += int64_t(storage.nbytes());
  }
  if (loaded.quantized)
    for (const auto& site : loaded.quantized->layer_sites())
      if (site.points->integer) bytes += site.points->integer->weight.resident_bytes();
  return bytes;
}

// One model, in this process.
nlohmann::json measure(const std::string& path, const BenchOptions& o) {
  const auto t_load = std::chrono::steady_clock::now();
  const LoadedModel loaded = load_model(path, o.backend);
  const double load_s = seconds_since(t_load);
  const std::string kind = loaded.quantized ? "W" + std::to_string(loaded.quantized->config().w.bit) + "A" +
                                                  std::to_string(loaded.quantized->config().a.bit) + " " +
                                                  backend_name(o.backend)
                                            : std::string("FP32");
  // A fixed pseudo-random 1024 x 768 picture: the encoder's cost does not depend on content.
  at::manual_seed(0);
  const at::Tensor image = at::randint(0, 256, {768, 1024, 3}, at::kByte);
  std::vector<sam::Prompt> prompts;
  for (int i = 0; i < o.boxes; ++i) {
    sam::Prompt p;
    const double x = 40.0 + 100.0 * (i % 8), y = 60.0 + 150.0 * double(i / 8 % 4);
    p.box = sam::Box{x, y, x + 180.0, y + 160.0};
    prompts.push_back(p);
  }
  sam::Predictor predictor(loaded.sam);
  std::vector<double> embed, decode;
  // Untimed first: a fresh process's first embedding also pays for its scratch pages and
  // oneDNN's primitives, ~20% more here, which no later image pays.
  for (int run = 0; run < o.warmup; ++run) {
    std::fprintf(stderr, "\rbench: %s warm-up %d/%d   ", kind.c_str(), run + 1, o.warmup);
    std::fflush(stderr);
    predictor.set_image(image);
  }
  // All embeddings first: the peak RSS up to then is the embedding's (the decoder's batch of
  // upscaled masks needs more than the encoder).
  for (int run = 0; run < o.runs; ++run) {
    const auto t_embed = std::chrono::steady_clock::now();
    predictor.set_image(image);
    embed.push_back(seconds_since(t_embed));
    std::fprintf(stderr, "\rbench: %s [%d/%d] embed %.3f s   ", kind.c_str(), run + 1, o.runs, embed.back());
    std::fflush(stderr);
  }
  const double embed_rss_mb = peak_rss_mb();
  for (int run = 0; run < o.runs; ++run) {
    const auto t_decode = std::chrono::steady_clock::now();
    predictor.predict(prompts, false);
    decode.push_back(seconds_since(t_decode));
  }
  std::fprintf(stderr, "\n");
  std::error_code ec;
  const auto file_bytes = std::filesystem::file_size(path, ec);
  return {{"model", path},
          {"kind", kind},
          {"load_seconds", load_s},
          {"embed_seconds", embed},
          {"decoder_seconds", decode},
          {"embed_min_seconds", *std::min_element(embed.begin(), embed.end())},
          {"embed_median_seconds", median(embed)},
          {"decoder_median_seconds", median(decode)},
          {"boxes", o.boxes},
          {"embed_peak_rss_mb", embed_rss_mb},
          {"peak_rss_mb", peak_rss_mb()},
          {"file_mb", ec ? 0.0 : double(file_bytes) / 1e6},
          {"weights_mb", double(resident_weight_bytes(loaded)) / 1e6}};
}

// One detector, in this process: detection time (its resize, network, decoding and NMS) on a
// fixed pseudo-random 640 x 480 picture (YOLOX letterboxes it to 640 x 640, Faster R-CNN
// resizes it to 1067 x 800).
nlohmann::json measure_detector(const std::string& path, const BenchOptions& o) {
  const auto t_load = std::chrono::steady_clock::now();
  const std::unique_ptr<detect::Detector> detector = detect::load_detector(path);
  const double load_s = seconds_since(t_load);
  const std::string kind = detector->describe().substr(0, detector->describe().find(" (")) + " FP32";
  at::manual_seed(0);
  const at::Tensor image = at::randint(0, 256, {480, 640, 3}, at::kByte);
  for (int run = 0; run < o.warmup; ++run) {
    std::fprintf(stderr, "\rbench: %s warm-up %d/%d   ", kind.c_str(), run + 1, o.warmup);
    std::fflush(stderr);
    detector->detect(image);
  }
  std::vector<double> times;
  for (int run = 0; run < o.runs; ++run) {
    const auto start = std::chrono::steady_clock::now();
    detector->detect(image);
    times.push_back(seconds_since(start));
    std::fprintf(stderr, "\rbench: %s [%d/%d] detect %.3f s   ", kind.c_str(), run + 1, o.runs, times.back());
    std::fflush(stderr);
  }
  std::fprintf(stderr, "\n");
  std::error_code ec;
  const auto file_bytes = std::filesystem::file_size(path, ec);
  return {{"model", path},
          {"kind", kind},
          {"detector", true},
          {"load_seconds", load_s},
          {"embed_seconds", times},
          {"decoder_seconds", std::vector<double>{0.0}},
          {"embed_min_seconds", *std::min_element(times.begin(), times.end())},
          {"embed_median_seconds", median(times)},
          {"decoder_median_seconds", 0.0},
          {"boxes", 0},
          {"embed_peak_rss_mb", peak_rss_mb()},
          {"peak_rss_mb", peak_rss_mb()},
          {"file_mb", ec ? 0.0 : double(file_bytes) / 1e6},
          {"weights_mb", double(detector->weight_bytes()) / 1e6}};
}

// Runs this binary on one model (or detector) with --json-row and returns the row it prints.
nlohmann::json measure_in_child(const std::string& path, bool detector, const BenchOptions& o) {
  std::vector<std::string> args = {"ptq4sam", "bench", "--json-row", detector ? "--detector" : "--model", path,
                                   "--backend", backend_name(o.backend), "--runs", std::to_string(o.runs),
                                   "--warmup", std::to_string(o.warmup),
                                   "--threads", std::to_string(o.threads), "--boxes", std::to_string(o.boxes)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out[2];
  if (pipe(out) != 0) throw Error("bench", "cannot create a pipe");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  std::string text;
  if (spawned == 0) {
    char buffer[4096];
    ssize_t n = 0;
    while ((n = read(out[0], buffer, sizeof buffer)) > 0) text.append(buffer, size_t(n));
  }
  close(out[0]);
  if (spawned != 0) throw Error("bench", "cannot run /proc/self/exe");
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw Error(path, "bench of this model failed (see above)");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    throw Error(path, "bench of this model printed no result");
  }
}

// One model's row over its rounds: min and median over every timed run, the largest RSS.
nlohmann::json merge_rounds(const std::vector<nlohmann::json>& rounds) {
  nlohmann::json row = rounds.front();
  std::vector<double> embed, decode;
  for (const auto& r : rounds) {
    for (const double t : r["embed_seconds"]) embed.push_back(t);
    for (const double t : r["decoder_seconds"]) decode.push_back(t);
    for (const char* key : {"embed_peak_rss_mb", "peak_rss_mb"})
      row[key] = std::max(row[key].get<double>(), r[key].get<double>());
  }
  row["embed_seconds"] = embed;
  row["decoder_seconds"] = decode;
  row["embed_min_seconds"] = *std::min_element(embed.begin(), embed.end());
  row["embed_median_seconds"] = median(embed);
  row["decoder_median_seconds"] = median(decode);
  row["rounds"] = rounds.size();
  return row;
}

void print_table(const std::vector<nlohmann::json>& rows) {
  std::printf("%-40s %-16s %10s %10s %12s %10s %10s %9s %11s\n", "model", "kind", "embed min", "embed med",
              "decoder/batch", "embed RSS", "peak RSS", "file MB", "weights MB");
  for (const auto& r : rows) {
    std::string name = std::filesystem::path(r["model"].get<std::string>()).filename().string();
    if (name.size() > 40) name = "..." + name.substr(name.size() - 37);
    char decoder[32];
    if (r.value("detector", false)) {
      std::snprintf(decoder, sizeof decoder, "%13s", "-");
    } else {
      std::snprintf(decoder, sizeof decoder, "%10.1f ms", 1e3 * r["decoder_median_seconds"].get<double>());
    }
    std::printf("%-40s %-16s %8.3f s %8.3f s %s %7.0f MB %7.0f MB %9.1f %11.1f\n", name.c_str(),
                r["kind"].get<std::string>().c_str(), r["embed_min_seconds"].get<double>(),
                r["embed_median_seconds"].get<double>(), decoder, r["embed_peak_rss_mb"].get<double>(),
                r["peak_rss_mb"].get<double>(), r["file_mb"].get<double>(), r["weights_mb"].get<double>());
  }
  if (std::any_of(rows.begin(), rows.end(), [](const auto& r) { return r.value("detector", false); }))
    std::printf("(detector rows: the time columns are one detection on a 640 x 480 image, letterboxed to 640 x 640)\n");
}

int run_bench(const BenchOptions& o) {
  if (o.runs < 1) throw Error("--runs " + std::to_string(o.runs), "must be at least 1");
  if (o.rounds < 1) throw Error("--rounds " + std::to_string(o.rounds), "must be at least 1");
  if (o.warmup < 0) throw Error("--warmup " + std::to_string(o.warmup), "must be at least 0");
  if (o.boxes < 1) throw Error("--boxes " + std::to_string(o.boxes), "must be at least 1");
  if (o.models.empty() && o.detectors.empty()) throw Error("bench", "give at least one --model or --detector");
  for (const auto& list : {o.models, o.detectors})
    for (const auto& model : list)
      if (!std::filesystem::is_regular_file(model)) throw Error(model, "no such model file");
  // Every row: the models, then the detectors.
  std::vector<std::pair<std::string, bool>> entries;
  for (const auto& m : o.models) entries.push_back({m, false});
  for (const auto& d : o.detectors) entries.push_back({d, true});
  if (o.json_row || (entries.size() == 1 && o.rounds == 1)) {
    init_runtime(o.threads);
    const nlohmann::json row = entries[0].second ? measure_detector(entries[0].first, o) : measure(entries[0].first, o);
    if (o.json_row) {
      std::printf("%s\n", row.dump().c_str());
    } else {
      print_table({row});
    }
    return 0;
  }
  std::vector<std::vector<nlohmann::json>> measured(entries.size());
  for (int round = 0; round < o.rounds; ++round)
    for (size_t m = 0; m < entries.size(); ++m) {
      if (o.rounds > 1 && m == 0) std::fprintf(stderr, "bench: round %d/%d\n", round + 1, o.rounds);
      measured[m].push_back(measure_in_child(entries[m].first, entries[m].second, o));
    }
  std::vector<nlohmann::json> rows;
  for (const auto& rounds : measured) rows.push_back(merge_rounds(rounds));
  print_table(rows);
  return 0;
}

}  // namespace

Runner add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Time the image encoder and mask decoder; peak memory and size per model");
  cmd->footer(
      "Example:\n"
      "  ptq4sam bench --model sam_vit_b.pth --model w8a8.safetensors --model w4a4.safetensors --threads 2\n"
      "  prints one row per model: image-embedding time (min and median over --runs, after --warmup\n"
      "  untimed ones), decoder time for one batch of --boxes box prompts, peak RSS up to the last\n"
      "  embedding and over the whole run (each model in its own process), file size and the bytes of\n"
      "  weights held in memory.\n"
      "  --detector yolox_l.pth adds a row for the detector (its time columns: one detection).\n"
      "  --rounds 3 --runs 2 measures FP32, W8A8, W4A4, FP32, ... in turn: on a machine whose speed\n"
      "  drifts, the rows' ratios then hold better than one model after another.");
  cmd->add_option("--model", o->models, "SAM checkpoint (.pth) or quantized artifact (.safetensors); repeatable");
  cmd->add_option("--detector", o->detectors,
                  "Detector checkpoint (YOLOX): a row timing one detection at 640 x 640; repeatable");
  add_backend_option(*cmd, o->backend);
  cmd->add_option("--runs", o->runs, "Timed runs per model and round")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Untimed embeddings per model and round before its timed runs")
      ->capture_default_str();
  cmd->add_option("--rounds", o->rounds, "Rounds of all models in turn, a process each; a row merges its runs")
      ->capture_default_str();
  cmd->add_option("--boxes", o->boxes, "Box prompts in the decoder's batch")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_flag("--json-row", o->json_row, "Measure the first model in this process and print its row as JSON");
  return [o]() { return run_bench(*o); };
}

}  // namespace ptq4sam::cli
