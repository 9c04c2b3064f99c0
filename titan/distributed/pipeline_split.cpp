#include "titan/distributed/pipeline_split.h"

#include <map>
#include <set>

#include "titan/common/error.h"
#include "titan/distributed/pipeline_schedule.h"

namespace titan::distributed::pp {

namespace {

const std::string kKey = "parallelism.";

// Stages of about equal weight: E = layers + the two ends' weights, E / stages each (the first
// E % stages one more); stage 0 starts with tok_embeddings, the last ends with norm and output.
std::vector<std::vector<std::string>> even_split(int stages, int64_t layers, int64_t in_w, int64_t out_w) {
  if (stages == 1) {
    std::vector<std::string> all = {"tok_embeddings"};
    for (int64_t l = 0; l < layers; ++l) all.push_back("layers." + std::to_string(l));
    all.push_back("norm");
    all.push_back("output");
    return {all};
  }
  const int64_t effective = layers + in_w + out_w;
  if (stages > effective)
    throw Error(std::to_string(stages) + " pipeline stages are more than the model's " + std::to_string(layers) +
                    " layers plus the embedding and output weights (" + std::to_string(effective) + ")",
                "use fewer stages (pipeline_parallel_degree x stages per rank) or a larger "
                "pipeline_parallel_layers_per_stage");
  const int64_t base = effective / stages, extra = effective % stages;
  if (in_w > base || out_w > base)
    throw Error(kKey + "pipeline_parallel_" + (in_w > base ? "first" : "last") + "_stage_less_layers = " +
                    std::to_string(in_w > base ? in_w : out_w) + " is more than the " + std::to_string(base) +
                    " layers a stage holds",
                "lower it, or use fewer stages");
  std::vector<std::vector<std::string>> out(static_cast<size_t>(stages));
  int64_t next = 0;
  for (int i = 0; i < stages; ++i) {
    int64_t slots = base + (i < extra ? 1 : 0);
    auto& mods = out[static_cast<size_t>(i)];
    if (i == 0) {
      mods.push_back("tok_embeddings");
      slots -= in_w;
    }
    if (i == stages - 1) slots -= out_w;
    for (int64_t k = 0; k < slots && next < layers; ++k) mods.push_back("layers." + std::to_string(next++));
    if (i == stages - 1) {
      while (next < layers) mods.push_back("layers." + std::to_string(next++));
      mods.push_back("norm");
      mods.push_back("output");
    }
  }
  return out;
}

// A user's module_fqns_per_model_part: every module of the model exactly once, in model order.
void check_user_split(const std::vector<std::vector<std::string>>& parts, int64_t layers) {
  const std::string key = kKey + "module_fqns_per_model_part";
  std::vector<std::string> order = {"tok_embeddings"};
  for (int64_t l = 0; l < layers; ++l) order.push_back("layers." + std::to_string(l));
  order.push_back("norm");
  order.push_back("output");
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < order.size(); ++i) position[order[i]] = i;
  size_t expected = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    if (parts[p].empty()) throw Error(key + ": part " + std::to_string(p) + " is empty", "give every stage modules");
    for (const auto& m : parts[p]) {
      const auto it = position.find(m);
      if (it == position.end())
        throw Error(key + ": \"" + m + "\" is not a module of the model (tok_embeddings, layers.0 to layers." +
                        std::to_string(layers - 1) + ", norm, output)",
                    "fix the name");
      if (it->second != expected)
        throw Error(key + ": \"" + m + "\" is out of place; the modules must appear once each, in model order (\"" +
                        (expected < order.size() ? order[expected] : std::string("nothing")) + "\" expected here)",
                    "list tok_embeddings, layers.0, layers.1, ..., norm, output, cut into stages");
      ++expected;
    }
  }
  if (expected != order.size())
    throw Error(key + ": \"" + order[expected] + "\" and the modules after it are in no stage",
                "list every module of the model");
}

}  // namespace

StageSplit split_stages(const SplitOptions& o) {
  const std::string name = canonical_schedule_name(o.schedule);
  const bool single = single_stage_schedule(name);
  if (o.pp < 1) throw Error(kKey + "pipeline_parallel_degree = " + std::to_string(o.pp) + " must be >= 1");
  if (o.n_layers < 1) throw Error("the model has no layers to split");
  if (o.first_stage_less_layers < 0 || o.last_stage_less_layers < 0)
    throw Error(kKey + "pipeline_parallel_first/last_stage_less_layers must be >= 0");
  StageSplit s;
  s.pp = o.pp;
  int64_t stages;
  if (!o.module_fqns_per_model_part.empty()) {
    stages = static_cast<int64_t>(o.module_fqns_per_model_part.size());
  } else if (o.layers_per_stage) {
    if (*o.layers_per_stage < 1)
      throw Error(kKey + "pipeline_parallel_layers_per_stage = " + std::to_string(*o.layers_per_stage) + " must be >= 1");
    const int64_t effective = o.n_layers + o.first_stage_less_layers + o.last_stage_less_layers;
    stages = (effective + *o.layers_per_stage - 1) / *o.layers_per_stage;
  } else {
    stages = static_cast<int64_t>(o.pp) * (single ? 1 : 2);
  }
  if (stages % o.pp != 0)
    throw Error(std::to_string(stages) + " pipeline stages do not divide among pipeline_parallel_degree = " +
                    std::to_string(o.pp) + " ranks",
                "choose pipeline_parallel_layers_per_stage (or module_fqns_per_model_part) giving a multiple of " +
                    std::to_string(o.pp) + " stages");
  s.stages_per_rank = static_cast<int>(stages / o.pp);
  if (single && s.stages_per_rank != 1)
    throw Error("parallelism.pipeline_parallel_schedule = \"" + name + "\" runs one stage per rank, but the split gives " +
                    std::to_string(s.stages_per_rank),
                "raise pipeline_parallel_layers_per_stage to " +
                    std::to_string((o.n_layers + o.first_stage_less_layers + o.last_stage_less_layers + o.pp - 1) / o.pp) +
                    " or more, or use a multi-stage schedule (Interleaved1F1B, ...)");
  if (!single && s.stages_per_rank < 2)
    throw Error("parallelism.pipeline_parallel_schedule = \"" + name + "\" runs several stages per rank, but the split "
                    "gives 1",
                "lower pipeline_parallel_layers_per_stage, or use 1F1B or GPipe");
  if (schedule_placement(name) == Placement::V && s.stages_per_rank != 2)
    throw Error("parallelism.pipeline_parallel_schedule = \"" + name + "\" needs exactly 2 stages per rank, but the "
                    "split gives " + std::to_string(s.stages_per_rank),
                "set pipeline_parallel_layers_per_stage so that there are 2 x pipeline_parallel_degree stages");
  if (!o.module_fqns_per_model_part.empty()) {
    check_user_split(o.module_fqns_per_model_part, o.n_layers);
    s.modules = o.module_fqns_per_model_part;
  } else {
    s.modules = even_split(static_cast<int>(stages), o.n_layers, o.first_stage_less_layers, o.last_stage_less_layers);
  }
  return s;
}

int microbatch_count(int64_t local_batch_size, int64_t microbatch_size) {
  if (microbatch_size < 1)
    throw Error(kKey + "pipeline_parallel_microbatch_size = " + std::to_string(microbatch_size) + " must be >= 1");
  if (local_batch_size % microbatch_size != 0)
    throw Error("training.local_batch_size = " + std::to_string(local_batch_size) +
                    " is not a multiple of parallelism.pipeline_parallel_microbatch_size = " +
                    std::to_string(microbatch_size),
                "make the local batch a whole number of microbatches");
  return static_cast<int>(local_batch_size / microbatch_size);
}

}  // namespace titan::distributed::pp
