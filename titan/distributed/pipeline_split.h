// How a Llama model is cut into pipeline stages, as torchtitan does it: the number of stages per
// rank the schedule needs (or pipeline_parallel_layers_per_stage gives), and the modules of each
// stage (tok_embeddings and norm + output weigh as first/last_stage_less_layers layers), or a
// user's module_fqns_per_model_part, checked. Torch-free; the runtime builds stages from it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace titan::distributed::pp {

struct StageSplit {
  int pp = 1;
  int stages_per_rank = 1;
  // Per stage (stage 0 first), its modules: "tok_embeddings", "layers.N", "norm", "output".
  std::vector<std::vector<std::string>> modules;
  int num_stages() const { return static_cast<int>(modules.size()); }
};

struct SplitOptions {
  std::string schedule = "1F1B";
  int pp = 1;
  int64_t n_layers = 0;
  std::optional<int64_t> layers_per_stage;  // pipeline_parallel_layers_per_stage
  int64_t first_stage_less_layers = 1;      // the weight of tok_embeddings, in layers
  int64_t last_stage_less_layers = 1;       // the weight of norm + output, in layers
  std::vector<std::vector<std::string>> module_fqns_per_model_part;  // empty: split evenly
};

// Throws titan::Error naming the parallelism.* key and the rule for a split that cannot be made.
StageSplit split_stages(const SplitOptions& o);

// local_batch_size / pipeline_parallel_microbatch_size; throws titan::Error unless it divides.
int microbatch_count(int64_t local_batch_size, int64_t microbatch_size);

}  // namespace titan::distributed::pp
