// Fault injection for the test suite, behind one interface: read once from the environment, here
// and nowhere else (docs/reliability.md, "Test hooks"). Real runs never set them; a run that
// has any set says so in its log.
#pragma once

#include <cstdint>
#include <string>

namespace titan {

struct TestHooks {
  std::string initial_state_file;     // TITAN_TEST_INITIAL_STATE=F: rank 0 writes the initial parameters to F
  std::string final_state_file;       // TITAN_TEST_FINAL_STATE=F: the final parameters, to F (F.pp<k> per stage)
  bool stop_after_init = false;       // TITAN_TEST_STOP_AFTER_INIT=1: build, parallelize, initialise, then stop
  int64_t die_after_save_step = -1;   // TITAN_TEST_DIE_AFTER_SAVE=N: SIGKILL right after step N's save
  int64_t die_in_save_step = -1;      // TITAN_TEST_DIE_IN_SAVE=N: SIGKILL halfway through step N's write
  bool tp_gather_high_precision = false;  // TITAN_TEST_TP_GATHER_HP=1: TP gathers float8 layers' inputs unconverted
  int skip_collective_rank = -1;      // TITAN_TEST_SKIP_COLLECTIVE=R:N: rank R skips its N-th collective
  int64_t skip_collective_number = -1;
  bool moe_no_load_balance = false;   // TITAN_TEST_MOE_NO_LOAD_BALANCE=1: MoE loads counted, expert bias left alone
  int64_t deepseek_q_lora_rank = -1;  // TITAN_TEST_DEEPSEEK_Q_LORA_RANK=R: DeepSeek-V3 flavors take a query latent of R

  static const TestHooks& get();      // the process's hooks, read on first use
  std::string describe() const;       // "" when none is set, else the variables that are
};

}  // namespace titan
