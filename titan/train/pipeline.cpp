#include "titan/train/pipeline.h"

#include "titan/common/log.h"
#include "titan/components/metrics/profiling.h"

namespace titan::train {

namespace pp = distributed::pp;

namespace {

// The index in model.parts() of the part a parameter belongs to.
size_t part_of(const std::string& fqn, size_t n_layers) {
  if (fqn.rfind("tok_embeddings.", 0) == 0) return 0;
  if (fqn.rfind("layers.", 0) == 0) return static_cast<size_t>(std::stoll(fqn.substr(7))) + 1;
  return n_layers + 1;  // norm, output
}

}  // namespace

std::vector<size_t> parts_of_rank(const PipelinePlan& plan, int pp_rank) {
  std::vector<size_t> parts;
  for (int st : plan.schedule.stages_of_rank(pp_rank)) {
    const auto [first, last] = plan.part_ranges[static_cast<size_t>(st)];
    for (size_t i = first; i < last; ++i) parts.push_back(i);
  }
  return parts;
}

Pipeline::Pipeline(const PipelinePlan& plan, models::Model& model, distributed::DataParallel& dp,
                   distributed::DeviceMesh& mesh, components::DeviceInfo& device, at::ScalarType activation_dtype,
                   int64_t seq_len, std::optional<int64_t> validation_seq_len,
                   const std::vector<std::string>& tied_across_stages)
    : plan_(plan), dp_(dp), mesh_(mesh), device_(device), gpu_wall_(device.device()), gpu_wait_(device.device()) {
  // Tied parameters: summed over the pipeline's two ends when different ranks hold them.
  const int last_stage = plan.schedule.num_stages() - 1;
  const int pp_rank = mesh.rank("pp");
  int first_holder = -1, last_holder = -1;
  for (int r = 0; r < mesh.size("pp"); ++r)
    for (int st : plan.schedule.stages_of_rank(r)) {
      if (st == 0) first_holder = r;
      if (st == last_stage) last_holder = r;
    }
  for (const auto& name : tied_across_stages) tied_.insert(name);
  if (!tied_.empty() && first_holder != last_holder) {
    if (first_holder != 0 || last_holder != mesh.size("pp") - 1)
      throw std::logic_error("Pipeline: tied parameters need the first stage on the first rank and the last on the last");
    if (pp_rank == first_holder || pp_rank == last_holder) {
      const auto names = dp.parameter_names();
      const auto weights = dp.parameters();
      for (size_t i = 0; i < names.size(); ++i)
        if (tied_.count(names[i])) tied_weights_.push_back(weights[i]);
    }
  }
  const size_t n_parts = model.num_parts();
  const models::Sizes args = model.config().sizes();
  const auto names = dp.parameter_names();
  const auto weights = dp.parameters();
  const int tp = mesh.dims().tp;
  auto stages = [&](bool training, int64_t seq) {
    std::vector<pp::Stage> out;
    for (int st : plan.schedule.stages_of_rank(mesh.rank("pp"))) {
      const auto [first, last] = plan.part_ranges[static_cast<size_t>(st)];
      pp::Stage stage;
      stage.index = st;
      // Between blocks the hidden state is (rows, seq, dim); sequence parallelism splits seq.
      stage.input = stage.output = pp::Boundary{{plan.microbatch_size, seq / tp, args.dim}, activation_dtype};
      for (size_t i = 0; i < names.size(); ++i) {
        const size_t part = part_of(names[i], static_cast<size_t>(args.n_layers));
        // A tied table is a weight of the first stage and of the last (a copy where they differ).
        const bool tied_here = tied_.count(names[i]) && last == n_parts;
        if ((part >= first && part < last) || tied_here) stage.weights.push_back(weights[i]);
      }
      stage.forward = [this, &model, first = first, last = last, n_parts, training](int m, const at::Tensor& input) {
        const components::Batch& mb = micro_.at(static_cast<size_t>(m));
        const at::Tensor& x = first == 0 ? mb.inputs : input;
        if (last < n_parts) return model.forward_parts(x, nullptr, first, last, &mb.inputs);
        at::Tensor per_token = model.forward_parts(x, &mb.labels, first, last, &mb.inputs);  // (rows, T) float32
        if (!training) {
          eval_sum_ += per_token.sum().to(at::kDouble).item<double>();
          return per_token.sum();
        }
        row_sums_[m].copy_(per_token.detach().sum(1).to(at::kDouble));
        return per_token.sum() / valid_;
      };
      out.push_back(std::move(stage));
    }
    return out;
  };
  pp::RuntimeHooks hooks;
  hooks.before_weight_gradients = [this](int, bool last) { dp_.set_gradient_sync(last && last_round_); };
  hooks.after_weight_gradients = [this] { dp_.finish_backward(); };
  if (device.device().is_cuda()) {
    hooks.around_wait = [this](bool begin) {
      if (timing_) begin ? gpu_wait_.begin() : gpu_wait_.end();
    };
    hooks.around_step = [this](bool begin) {
      if (timing_) begin ? gpu_wall_.begin() : gpu_wall_.end();
    };
  }
  auto& group = mesh.group("pp");
  train_ = std::make_unique<pp::Runtime>(plan.schedule, stages(true, seq_len), group, device.device(),
                                         /*training=*/true, hooks);
  if (validation_seq_len)
    eval_ = std::make_unique<pp::Runtime>(plan.eval_schedule, stages(false, *validation_seq_len), group,
                                          device.device(), /*training=*/false);
}

Pipeline::~Pipeline() = default;

void Pipeline::split(const components::Batch& batch) {
  const int64_t rows = plan_.microbatch_size, count = batch.inputs.size(0) / rows;
  micro_.clear();
  for (int64_t k = 0; k < count; ++k)
    micro_.push_back({batch.inputs.narrow(0, k * rows, rows), batch.labels.narrow(0, k * rows, rows)});
}

at::Tensor Pipeline::train_round(const components::Batch& batch, const at::Tensor& global_valid_tokens,
                                 bool last_round, bool measure) {
  split(batch);
  row_sums_ = at::zeros({static_cast<int64_t>(micro_.size()), plan_.microbatch_size},
                        at::TensorOptions().dtype(at::kDouble).device(device_.device()));
  valid_ = global_valid_tokens;
  last_round_ = last_round;
  dp_.release_all();  // gathered before the last optimizer step, maybe
  const bool cuda = device_.device().is_cuda();
  if (cuda) {  // the earlier rounds' intervals: finished since the last step's read, so their events go
    wall_ += gpu_wall_.collect();
    wait_ += gpu_wait_.collect();
  }
  int64_t before = 0;
  if (measure) {
    // The schedule's own peak; what it takes still counts in the step's peak (take_peak_bytes).
    device_.take_peak_bytes();
    before = cuda ? components::cuda::active_bytes(device_.device().index())
                  : components::DeviceInfo::current_resident_bytes();
  }
  timing_ = measure && cuda;
  train_->run_step();
  timing_ = false;
  if (last_round && !tied_weights_.empty()) {
    // The step's gradients of a tied table: the first stage's plus the last stage's, on both ends
    // (each end's optimizer then makes the same update).
    TITAN_RANGE("tied_gradients");
    for (auto& w : tied_weights_) {
      at::Tensor& g = w.mutable_grad();
      if (!g.defined()) g = at::zeros_like(w);
      mesh_.group("pp_ends").all_reduce(g).wait();
    }
  }
  if (measure) {
    const auto& st = train_->last_step_stats();
    const double peak = static_cast<double>(device_.take_peak_bytes());
    peak_growth_ = std::max(peak_growth_, peak - static_cast<double>(before));
    if (!cuda) {  // on CUDA: the stream's intervals, added up once the GPU has passed them (summary)
      wall_ += st.wall_seconds;
      wait_ += st.wait_seconds;
    }
    max_in_flight_ = std::max(max_in_flight_, st.max_in_flight);
    ++measured_;
  }
  // Only the last stage computed the losses: the others add zeros (exact).
  at::Tensor shared = row_sums_.view({-1});
  mesh_.group("pp").all_reduce(shared).wait();
  return row_sums_.view({-1});
}

double Pipeline::validation_sum(const components::Batch& batch) {
  split(batch);
  eval_sum_ = 0;
  dp_.release_all();
  eval_->run_step();
  at::Tensor t = at::full({1}, eval_sum_, at::kDouble).to(device_.device());
  mesh_.group("pp").all_reduce(t).wait();  // only the last stage computed it
  return t.cpu().item<double>();
}

std::string Pipeline::summary() {
  if (measured_ == 0) return "";
  wall_ += gpu_wall_.collect();  // after the last step's read: every interval is finished
  wait_ += gpu_wait_.collect();
  std::string stages;
  for (int st : train_->schedule().stages_of_rank(mesh_.rank("pp")))
    stages += (stages.empty() ? "" : ", ") + std::to_string(st);
  return "Pipeline rank " + std::to_string(mesh_.rank("pp")) + " (stage " + stages + "): idle " +
         log::format("%.1f%%", 100.0 * wait_ / std::max(wall_, 1e-12)) + " of the schedule's time over " +
         std::to_string(measured_) + (measured_ == 1 ? " round" : " rounds") + " (its bubble at unit costs: " +
         log::format("%.1f%%", 100.0 * pp::simulate(train_->schedule()).bubble_fraction) + "), up to " +
         std::to_string(max_in_flight_) + (max_in_flight_ == 1 ? " microbatch" : " microbatches") + " in flight, peak memory " +
         log::format("%.3f", peak_growth_ / 1073741824.0) + " GiB above the schedule's start, " +
         log::format("%.4f", wall_ / static_cast<double>(measured_)) + " s per schedule";
}

}  // namespace titan::train
