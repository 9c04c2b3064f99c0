// Tests of the job-config schema and loaders: defaults, precedence CLI > TOML > default, flag
// forms, lists, every user-error message, the to_toml() round trip, and torchtitan's own configs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <stdexcept>

#include "titan/common/error.h"
#include "titan/config/job_config.h"

namespace titan::config {
namespace {

namespace fs = std::filesystem;
using Strings = std::vector<std::string>;

// A TOML file in the temp directory, removed when the test ends.
class TempToml {
 public:
  explicit TempToml(const std::string& text) {
    static int counter = 0;
    path_ = (fs::temp_directory_path() / ("titan_test_config_" + std::to_string(getpid()) + "_" +
                                          std::to_string(counter++) + ".toml"))
                .string();
    std::ofstream(path_) << text;
  }
  ~TempToml() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The message of the titan::Error that `body` throws; fails the test if it throws none.
std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const titan::Error& e) {
    return e.message();
  }
  ADD_FAILURE() << "expected a titan::Error";
  return "";
}

JobConfig load_file(const TempToml& file, Strings extra = {}) {
  Strings args = {"--job.config_file", file.path()};
  args.insert(args.end(), extra.begin(), extra.end());
  return load_config(args);
}

std::string reference_config(const std::string& name) {
  return std::string(TITAN_SOURCE_DIR) + "/tests/data/torchtitan-v0.2.2-configs/" + name;
}

TEST(ConfigSchema, NamesAreUniqueOrderedAndDocumented) {
  const auto& keys = schema();
  std::set<std::string> names;
  for (const KeySpec& key : keys) {
    EXPECT_TRUE(names.insert(key.name).second) << "duplicate key " << key.name;
    EXPECT_FALSE(key.help.empty()) << key.name;
    EXPECT_EQ(key.help.find('\n'), std::string::npos) << key.name;
    EXPECT_EQ(find_key(key.name), &key);
  }
  EXPECT_EQ(keys.front().name, "job.config_file");
  EXPECT_EQ(keys.back().name, "debug.moe_force_load_balance");
  EXPECT_EQ(find_key("training.stepz"), nullptr);
  const Strings expected_sections = {"job",
                                     "profiling",
                                     "metrics",
                                     "model",
                                     "optimizer",
                                     "lr_scheduler",
                                     "training",
                                     "training.dataloader",
                                     "parallelism",
                                     "checkpoint",
                                     "activation_checkpoint",
                                     "compile",
                                     "quantize.linear.float8",
                                     "quantize.linear.mx",
                                     "quantize.grouped_mm.float8",
                                     "quantize.grouped_mm.mx",
                                     "comm",
                                     "memory_estimation",
                                     "fault_tolerance",
                                     "experimental",
                                     "validation",
                                     "validation.dataloader",
                                     "debug"};
  EXPECT_EQ(sections(), expected_sections);
}

TEST(ConfigSchema, EveryDefaultPassesItsOwnChecks) {
  JobConfig config;
  for (const KeySpec& key : schema()) {
    EXPECT_NO_THROW(config.set(key.name, key.default_value)) << key.name;
  }
}

TEST(ConfigDefaults, SpotChecks) {
  JobConfig config;
  EXPECT_EQ(config.get_int("training.steps"), 10000);
  EXPECT_EQ(config.get_int("training.seq_len"), 2048);
  EXPECT_DOUBLE_EQ(config.get_float("optimizer.lr"), 8e-4);
  EXPECT_DOUBLE_EQ(config.get_float("training.max_norm"), 1.0);
  EXPECT_EQ(config.get_string("job.dump_folder"), "./outputs");
  EXPECT_EQ(config.get_string("activation_checkpoint.selective_ac_option"), "2");
  EXPECT_EQ(config.get_int("parallelism.data_parallel_shard_degree"), -1);
  EXPECT_EQ(config.get_opt_string("job.config_file"), std::nullopt);
  EXPECT_EQ(config.get_opt_string("parallelism.context_parallel_load_balancer"), "headtail");
  EXPECT_EQ(config.get_opt_string("parallelism.pipeline_parallel_schedule_csv"), "");
  EXPECT_EQ(config.get_opt_int("lr_scheduler.total_steps"), std::nullopt);
  EXPECT_EQ(config.get_opt_float("lr_scheduler.decay_ratio"), std::nullopt);
  EXPECT_EQ(config.get_opt_int("training.dataloader.prefetch_factor"), std::nullopt);
  EXPECT_EQ(config.get_int("validation.dataloader.num_workers"), 0);
  EXPECT_EQ(config.get_list("compile.components"), (Strings{"model", "loss"}));
  EXPECT_EQ(config.get_list("quantize.linear.mx.filter_fqns"), Strings{"output"});
  EXPECT_TRUE(config.get_list("quantize.linear.float8.filter_fqns").empty());
  EXPECT_EQ(config.get_string("quantize.grouped_mm.mx.recipe_name"), "mxfp8");
  EXPECT_TRUE(config.get_list_list("parallelism.module_fqns_per_model_part").empty());
  EXPECT_TRUE(config.get_bool("activation_checkpoint.preserve_rng_state"));
  EXPECT_EQ(config.get_int("comm.trace_buf_size"), 20000);
  EXPECT_EQ(config.source("training.steps"), "default");
  EXPECT_TRUE(config.is_default("training.steps"));
  EXPECT_EQ(load_config({}), config);
}

TEST(ConfigLoad, PrecedenceCliOverTomlOverDefault) {
  TempToml file(
      "[training]\n"
      "steps = 20\n"
      "seq_len = 512\n"
      "[optimizer]\n"
      "lr = 1e-3\n");
  JobConfig config = load_file(file, {"--training.steps", "5"});
  EXPECT_EQ(config.get_int("training.steps"), 5);
  EXPECT_EQ(config.source("training.steps"), "--training.steps");
  EXPECT_EQ(config.get_int("training.seq_len"), 512);
  EXPECT_EQ(config.source("training.seq_len"), file.path() + ":3");
  EXPECT_DOUBLE_EQ(config.get_float("optimizer.lr"), 1e-3);
  EXPECT_EQ(config.source("optimizer.lr"), file.path() + ":5");
  EXPECT_EQ(config.get_int("training.local_batch_size"), 8);
  EXPECT_FALSE(config.is_default("training.seq_len"));
  EXPECT_EQ(config.get_opt_string("job.config_file"), file.path());
  // The = form, the last of repeated flags, and a flag before --job.config_file all count.
  config =
      load_config({"--training.steps=7", "--job.config_file=" + file.path(), "--training.steps=9"});
  EXPECT_EQ(config.get_int("training.steps"), 9);
  EXPECT_EQ(config.get_int("training.seq_len"), 512);
}

TEST(ConfigLoad, EmptyFileGivesDefaults) {
  TempToml file("# nothing set\n");
  JobConfig config = load_file(file);
  EXPECT_EQ(config.get_int("training.steps"), 10000);
  EXPECT_EQ(config.get_string("job.description"), "default job");
  EXPECT_EQ(config.source("job.config_file"), "--job.config_file");
}

TEST(ConfigLoad, NestedTablesAndIntsForFloats) {
  TempToml file(
      "[training]\nmax_norm = 2\n"
      "[training.dataloader]\nnum_workers = 4\n"
      "[quantize.linear.float8]\nrecipe_name = \"rowwise\"\n"
      "[quantize.grouped_mm.float8]\nfqns = \"experts,shared\"\n");
  JobConfig config = load_file(file);
  EXPECT_DOUBLE_EQ(config.get_float("training.max_norm"), 2.0);
  EXPECT_EQ(config.get_int("training.dataloader.num_workers"), 4);
  EXPECT_EQ(config.get_opt_string("quantize.linear.float8.recipe_name"), "rowwise");
  EXPECT_EQ(config.get_list("quantize.grouped_mm.float8.fqns"), (Strings{"experts", "shared"}));
}

TEST(ConfigLoad, BooleanFlags) {
  TempToml file("[metrics]\nenable_tensorboard = true\n");
  EXPECT_TRUE(load_file(file).get_bool("metrics.enable_tensorboard"));
  EXPECT_FALSE(
      load_file(file, {"--no-metrics.enable_tensorboard"}).get_bool("metrics.enable_tensorboard"));
  EXPECT_FALSE(load_file(file, {"--metrics.enable_tensorboard=false"})
                   .get_bool("metrics.enable_tensorboard"));
  JobConfig config = load_config({"--checkpoint.enable", "--checkpoint.no_initial_load_model_only",
                                  "--job.print-config", "--compile.enable=true"});
  EXPECT_TRUE(config.get_bool("checkpoint.enable"));
  EXPECT_FALSE(config.get_bool("checkpoint.initial_load_model_only"));
  EXPECT_TRUE(config.get_bool("job.print_config"));
  EXPECT_TRUE(config.get_bool("compile.enable"));
  EXPECT_EQ(config.source("checkpoint.initial_load_model_only"),
            "--checkpoint.initial_load_model_only");
  std::string msg = error_of([] { load_config({"--no-training.steps"}); });
  EXPECT_NE(msg.find("only boolean keys"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--checkpoint.enable=maybe"}); });
  EXPECT_NE(msg.find("'maybe' is not a boolean"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--checkpoint.enable", "false"}); });
  EXPECT_NE(msg.find("--checkpoint.enable=false"), std::string::npos) << msg;
}

TEST(ConfigLoad, ListsFromTomlAndCli) {
  TempToml file(
      "[quantize.linear.float8]\nfilter_fqns = [\"output\", \"attention.wq\"]\n"
      "[parallelism]\nmodule_fqns_per_model_part = [[\"tok_embeddings\", \"layers.0\"], [], "
      "[\"norm\", \"output\"]]\n");
  JobConfig config = load_file(file);
  EXPECT_EQ(config.get_list("quantize.linear.float8.filter_fqns"),
            (Strings{"output", "attention.wq"}));
  EXPECT_EQ(config.get_list_list("parallelism.module_fqns_per_model_part"),
            (std::vector<Strings>{{"tok_embeddings", "layers.0"}, {}, {"norm", "output"}}));
  config = load_file(
      file, {"--quantize.linear.float8.filter_fqns", "output, attention.wk", "--compile.components",
             "", "--model.converters=float8", "--parallelism.module_fqns_per_model_part", "a,b;c"});
  EXPECT_EQ(config.get_list("quantize.linear.float8.filter_fqns"),
            (Strings{"output", "attention.wk"}));
  EXPECT_TRUE(config.get_list("compile.components").empty());
  EXPECT_EQ(config.get_list("model.converters"), Strings{"float8"});
  EXPECT_EQ(config.get_list_list("parallelism.module_fqns_per_model_part"),
            (std::vector<Strings>{{"a", "b"}, {"c"}}));
  config = load_file(file, {"--parallelism.module_fqns_per_model_part", "None"});
  EXPECT_TRUE(config.get_list_list("parallelism.module_fqns_per_model_part").empty());
  // A plain string only stands for a list where torchtitan's type is `list[str] | str`.
  TempToml bad("[compile]\ncomponents = \"model\"\n");
  std::string msg = error_of([&] { load_file(bad); });
  EXPECT_NE(msg.find(":2: compile.components: expected list[str], got string \"model\""),
            std::string::npos)
      << msg;
}

TEST(ConfigLoad, OptionalValuesTakeNone) {
  JobConfig config =
      load_config({"--lr_scheduler.total_steps", "50", "--lr_scheduler.decay_ratio", "0.5",
                   "--parallelism.context_parallel_load_balancer", "None", "--debug.seed=-3"});
  EXPECT_EQ(config.get_opt_int("lr_scheduler.total_steps"), 50);
  EXPECT_EQ(config.get_opt_float("lr_scheduler.decay_ratio"), 0.5);
  EXPECT_EQ(config.get_opt_string("parallelism.context_parallel_load_balancer"), std::nullopt);
  EXPECT_EQ(config.get_opt_int("debug.seed"), -3);
  config = load_config({"--lr_scheduler.total_steps=none", "--debug.seed", "-1"});
  EXPECT_EQ(config.get_opt_int("lr_scheduler.total_steps"), std::nullopt);
  EXPECT_EQ(config.get_opt_int("debug.seed"), -1);
  std::string msg =
      error_of([] { load_config({"--parallelism.context_parallel_load_balancer="}); });
  EXPECT_NE(msg.find("must not be an empty string"), std::string::npos) << msg;
}

TEST(ConfigErrors, UnknownSection) {
  TempToml file("[job]\ndescription = \"x\"\n\n[trainng]\nsteps = 3\n");
  std::string msg = error_of([&] { load_file(file); });
  EXPECT_NE(msg.find(file.path() + ":4: unknown section [trainng]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean [training]"), std::string::npos) << msg;
  TempToml nested("[quantize.linear.float9]\nemulate = true\n");
  msg = error_of([&] { load_file(nested); });
  EXPECT_NE(msg.find("did you mean [quantize.linear.float8]"), std::string::npos) << msg;
}

TEST(ConfigErrors, UnknownKeyWithSuggestion) {
  TempToml file("[training]\nseq_len = 64\nstpes = 3\n");
  std::string msg = error_of([&] { load_file(file); });
  EXPECT_NE(msg.find(file.path() + ":3: unknown key 'training.stpes'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'training.steps'"), std::string::npos) << msg;
  TempToml wrong_section("[training]\nlog_freq = 1\n");
  msg = error_of([&] { load_file(wrong_section); });
  EXPECT_NE(msg.find("did you mean 'metrics.log_freq'"), std::string::npos) << msg;
  TempToml key_as_section("training = 3\n");
  msg = error_of([&] { load_file(key_as_section); });
  EXPECT_NE(msg.find(":1: 'training' is a section, not a key"), std::string::npos) << msg;
}

TEST(ConfigErrors, WrongType) {
  TempToml file("[training]\nsteps = 2.5\n");
  std::string msg = error_of([&] { load_file(file); });
  EXPECT_NE(msg.find(file.path() + ":2: training.steps: expected int, got float 2.5"),
            std::string::npos)
      << msg;
  TempToml quoted("[training]\nseq_len = \"1024\"\n");
  msg = error_of([&] { load_file(quoted); });
  EXPECT_NE(msg.find("training.seq_len: expected int, got string \"1024\""), std::string::npos)
      << msg;
  TempToml not_string("[model]\nflavor = 8\n");
  msg = error_of([&] { load_file(not_string); });
  EXPECT_NE(msg.find("model.flavor: expected str, got int 8"), std::string::npos) << msg;
  TempToml mixed("[model]\nconverters = [\"float8\", 3]\n");
  msg = error_of([&] { load_file(mixed); });
  EXPECT_NE(msg.find("element 1 is int 3"), std::string::npos) << msg;
}

TEST(ConfigErrors, BadChoiceListsAllowedValues) {
  TempToml file("[activation_checkpoint]\nmode = \"partial\"\n");
  std::string msg = error_of([&] { load_file(file); });
  EXPECT_NE(msg.find(file.path() + ":2: activation_checkpoint.mode = \"partial\""),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("selective, full, memory_budget, none"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--lr_scheduler.decay_type", "exp"}); });
  EXPECT_NE(msg.find("--lr_scheduler.decay_type: lr_scheduler.decay_type = \"exp\""),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("linear, sqrt, cosine"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--activation_checkpoint.selective_ac_option", "every"}); });
  EXPECT_NE(msg.find("positive integer"), std::string::npos) << msg;
}

TEST(ConfigErrors, OutOfRange) {
  std::string msg = error_of([] { load_config({"--training.steps", "0"}); });
  EXPECT_NE(msg.find("--training.steps: training.steps = 0: must be >= 1"), std::string::npos)
      << msg;
  TempToml file("[lr_scheduler]\ndecay_ratio = 1.5\n");
  msg = error_of([&] { load_file(file); });
  EXPECT_NE(msg.find(":2: lr_scheduler.decay_ratio = 1.5: must be in [0, 1]"), std::string::npos)
      << msg;
  msg = error_of([] { load_config({"--optimizer.eps=0"}); });
  EXPECT_NE(msg.find("optimizer.eps = 0.0: must be > 0"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--validation.steps=0"}); });
  EXPECT_NE(msg.find("validation.steps = 0"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--optimizer.lr=-0.1"}); });
  EXPECT_NE(msg.find("optimizer.lr = -0.1: must be >= 0"), std::string::npos) << msg;
  EXPECT_EQ(load_config({"--validation.steps=-1"}).get_int("validation.steps"), -1);
}

TEST(ConfigErrors, MalformedToml) {
  TempToml file("[training]\nsteps = 3\nseq_len = = 4\n");
  std::string msg = error_of([&] { load_file(file); });
  EXPECT_NE(msg.find(file.path() + ":3:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("invalid TOML"), std::string::npos) << msg;
}

TEST(ConfigErrors, MissingFile) {
  std::string msg = error_of([] { load_config({"--job.config_file", "/nonexistent/ohno.toml"}); });
  EXPECT_NE(msg.find("'/nonexistent/ohno.toml' does not exist"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fix:"), std::string::npos) << msg;
}

TEST(ConfigErrors, CommandLine) {
  std::string msg = error_of([] { load_config({"--training.steps", "ten"}); });
  EXPECT_NE(msg.find("--training.steps: 'ten' is not an integer"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--optimizer.lr=fast"}); });
  EXPECT_NE(msg.find("--optimizer.lr: 'fast' is not a number"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--training.steps", "1.5"}); });
  EXPECT_NE(msg.find("'1.5' is not an integer"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--training.stepz", "3"}); });
  EXPECT_NE(msg.find("unknown flag '--training.stepz'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean '--training.steps'"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--no-metrics.enable_tensorbord"}); });
  EXPECT_NE(msg.find("did you mean '--metrics.enable_tensorboard'"), std::string::npos) << msg;
  msg = error_of([] { load_config({"configs/debug_model.toml"}); });
  EXPECT_NE(msg.find("unexpected argument 'configs/debug_model.toml'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--job.config_file configs/debug_model.toml"), std::string::npos) << msg;
  msg = error_of([] { load_config({"--training.steps"}); });
  EXPECT_NE(msg.find("--training.steps needs a value"), std::string::npos) << msg;
  msg = error_of([] { load_config({"-x"}); });
  EXPECT_NE(msg.find("unknown flag '-x'"), std::string::npos) << msg;
}

TEST(ConfigHelp, HelpRequestedAndText) {
  EXPECT_THROW(load_config({"--training.steps", "3", "--help"}), HelpRequested);
  EXPECT_THROW(load_config({"-h"}), HelpRequested);
  std::string help = help_text();
  for (const KeySpec& key : schema()) {
    EXPECT_NE(help.find(key.name + "  "), std::string::npos) << key.name;
  }
  EXPECT_NE(help.find("--training.steps  int (default: 10000; >= 1)"), std::string::npos);
  EXPECT_NE(help.find("--[no-]checkpoint.enable  bool (default: false)"), std::string::npos);
  EXPECT_NE(help.find("[quantize.linear.float8]"), std::string::npos);
}

TEST(ConfigApi, SetChecksTypesAndGettersCheckNames) {
  JobConfig config;
  config.set("training.steps", 42);
  EXPECT_EQ(config.get_int("training.steps"), 42);
  EXPECT_EQ(config.source("training.steps"), "set by the program");
  config.set("optimizer.lr", int64_t{1});  // ints are fine for float keys
  EXPECT_DOUBLE_EQ(config.get_float("optimizer.lr"), 1.0);
  config.set("model.hf_assets_path", std::string("/x"), "model.tokenizer_path");
  EXPECT_EQ(config.source("model.hf_assets_path"), "model.tokenizer_path");
  std::string msg = error_of([&] { config.set("training.steps", 2.5); });
  EXPECT_NE(msg.find("training.steps: expected int, got float 2.5"), std::string::npos) << msg;
  msg = error_of([&] { config.set("training.dtype", std::string("float16")); });
  EXPECT_NE(msg.find("bfloat16, float32"), std::string::npos) << msg;
  EXPECT_THROW(config.set("training.nope", 1), std::logic_error);
  EXPECT_THROW(config.get_int("training.nope"), std::logic_error);
  EXPECT_THROW(config.get_float("training.steps"), std::logic_error);
  EXPECT_THROW(config.get_string("job.config_file"), std::logic_error);
  EXPECT_THROW(config.source("nope"), std::logic_error);
}

TEST(ConfigToml, RoundTripGivesEqualConfig) {
  TempToml file(
      "[job]\ndescription = \"quote \\\" backslash \\\\ tab\\t unicode \u00e9\"\n"
      "[parallelism]\nmodule_fqns_per_model_part = [[\"a\"], [], [\"b\", \"c\"]]\n");
  JobConfig config =
      load_file(file, {"--optimizer.lr=0.1", "--optimizer.eps=1e-12", "--training.max_norm=3",
                       "--lr_scheduler.decay_ratio=0.3333333333333333", "--debug.seed=7",
                       "--parallelism.context_parallel_load_balancer=None",
                       "--compile.components=", "--no-activation_checkpoint.preserve_rng_state",
                       "--job.save_config_file=cfg.toml"});
  std::string text = config.to_toml();
  EXPECT_NE(text.find("[training.dataloader]"), std::string::npos) << text;
  EXPECT_NE(text.find("# total_steps = None"), std::string::npos) << text;
  EXPECT_NE(text.find("context_parallel_load_balancer = \"None\""), std::string::npos) << text;
  TempToml saved(text);
  JobConfig reloaded;
  merge_toml_file(reloaded, saved.path());
  for (const KeySpec& key : schema()) {
    EXPECT_EQ(reloaded.get(key.name), config.get(key.name)) << key.name;
  }
  EXPECT_EQ(reloaded, config);
  // Through load_config too: everything but job.config_file (which names the saved file).
  JobConfig via_cli = load_config({"--job.config_file", saved.path()});
  for (const KeySpec& key : schema()) {
    if (key.name != "job.config_file") {
      EXPECT_EQ(via_cli.get(key.name), config.get(key.name)) << key.name;
    }
  }
  JobConfig defaults;
  TempToml saved_defaults(defaults.to_toml());
  JobConfig reloaded_defaults;
  merge_toml_file(reloaded_defaults, saved_defaults.path());
  EXPECT_EQ(reloaded_defaults, defaults);
}

class ReferenceConfigs : public ::testing::TestWithParam<const char*> {};

TEST_P(ReferenceConfigs, LoadWithoutError) {
  std::string path = reference_config(GetParam());
  ASSERT_TRUE(fs::exists(path)) << path;
  JobConfig config = load_config({"--job.config_file", path});
  EXPECT_EQ(config.get_string("model.name"), "llama3");
  EXPECT_EQ(config.get_string("optimizer.name"), "AdamW");
  EXPECT_EQ(config.get_list("quantize.linear.float8.filter_fqns"), Strings{"output"});
  EXPECT_TRUE(config.source("model.name").starts_with(path + ":")) << config.source("model.name");
}

INSTANTIATE_TEST_SUITE_P(TorchtitanV022, ReferenceConfigs,
                         ::testing::Values("debug_model.toml", "llama3_8b.toml", "llama3_70b.toml",
                                           "llama3_405b.toml", "integration_base_config.toml"));

TEST(ReferenceConfigValues, PresetsReadBack) {
  JobConfig debug = load_config({"--job.config_file", reference_config("debug_model.toml")});
  EXPECT_EQ(debug.get_string("model.flavor"), "debugmodel");
  EXPECT_EQ(debug.get_int("training.steps"), 10);
  EXPECT_EQ(debug.get_int("lr_scheduler.warmup_steps"), 2);
  EXPECT_EQ(debug.get_opt_float("lr_scheduler.decay_ratio"), 0.8);
  EXPECT_EQ(debug.get_int("metrics.log_freq"), 1);
  EXPECT_FALSE(debug.get_bool("checkpoint.last_save_model_only"));
  EXPECT_EQ(debug.get_string("parallelism.pipeline_parallel_schedule"), "Interleaved1F1B");
  EXPECT_EQ(debug.get_int("validation.freq"), 5);

  JobConfig llama8b = load_config({"--job.config_file", reference_config("llama3_8b.toml")});
  EXPECT_EQ(llama8b.get_string("model.flavor"), "8B");
  EXPECT_DOUBLE_EQ(llama8b.get_float("optimizer.lr"), 3e-4);
  EXPECT_EQ(llama8b.get_string("activation_checkpoint.selective_ac_option"), "op");
  EXPECT_TRUE(llama8b.get_bool("metrics.enable_tensorboard"));

  JobConfig llama70b = load_config({"--job.config_file", reference_config("llama3_70b.toml")});
  EXPECT_EQ(llama70b.get_string("activation_checkpoint.mode"), "full");
  EXPECT_EQ(llama70b.get_int("parallelism.tensor_parallel_degree"), 8);

  JobConfig llama405b = load_config({"--job.config_file", reference_config("llama3_405b.toml")});
  EXPECT_EQ(llama405b.get_string("model.flavor"), "405B");
  EXPECT_EQ(llama405b.get_int("parallelism.tensor_parallel_degree"), 8);
  EXPECT_TRUE(llama405b.get_bool("parallelism.enable_async_tensor_parallel"));
  EXPECT_EQ(llama405b.get_list("model.converters"), Strings{"float8"});
  EXPECT_TRUE(llama405b.get_bool("quantize.linear.float8.enable_fsdp_float8_all_gather"));
  EXPECT_EQ(llama405b.get_int("lr_scheduler.warmup_steps"), 600);
  EXPECT_EQ(llama405b.get_int("training.local_batch_size"), 2);
  EXPECT_DOUBLE_EQ(llama405b.get_float("optimizer.lr"), 8e-5);
}

}  // namespace
}  // namespace titan::config
