#include "titan/common/test_hooks.h"

#include <cstdio>
#include <cstdlib>

namespace titan {

namespace {

int64_t env_step(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : -1;
}

TestHooks read_hooks() {
  TestHooks h;
  if (const char* v = std::getenv("TITAN_TEST_INITIAL_STATE"); v && *v) h.initial_state_file = v;
  if (const char* v = std::getenv("TITAN_TEST_FINAL_STATE"); v && *v) h.final_state_file = v;
  h.stop_after_init = std::getenv("TITAN_TEST_STOP_AFTER_INIT") != nullptr;
  h.die_after_save_step = env_step("TITAN_TEST_DIE_AFTER_SAVE");
  h.die_in_save_step = env_step("TITAN_TEST_DIE_IN_SAVE");
  h.tp_gather_high_precision = std::getenv("TITAN_TEST_TP_GATHER_HP") != nullptr;
  h.moe_no_load_balance = std::getenv("TITAN_TEST_MOE_NO_LOAD_BALANCE") != nullptr;
  h.deepseek_q_lora_rank = env_step("TITAN_TEST_DEEPSEEK_Q_LORA_RANK");
  if (const char* v = std::getenv("TITAN_TEST_SKIP_COLLECTIVE")) {
    int r = -1;
    long long n = -1;
    if (std::sscanf(v, "%d:%lld", &r, &n) == 2) {
      h.skip_collective_rank = r;
      h.skip_collective_number = n;
    }
  }
  return h;
}

}  // namespace

const TestHooks& TestHooks::get() {
  static const TestHooks hooks = read_hooks();
  return hooks;
}

std::string TestHooks::describe() const {
  std::string out;
  auto add = [&](bool set, const char* name) {
    if (set) out += (out.empty() ? "" : ", ") + std::string(name);
  };
  add(!initial_state_file.empty(), "TITAN_TEST_INITIAL_STATE");
  add(!final_state_file.empty(), "TITAN_TEST_FINAL_STATE");
  add(stop_after_init, "TITAN_TEST_STOP_AFTER_INIT");
  add(die_after_save_step >= 0, "TITAN_TEST_DIE_AFTER_SAVE");
  add(die_in_save_step >= 0, "TITAN_TEST_DIE_IN_SAVE");
  add(tp_gather_high_precision, "TITAN_TEST_TP_GATHER_HP");
  add(skip_collective_rank >= 0, "TITAN_TEST_SKIP_COLLECTIVE");
  add(moe_no_load_balance, "TITAN_TEST_MOE_NO_LOAD_BALANCE");
  add(deepseek_q_lora_rank >= 0, "TITAN_TEST_DEEPSEEK_Q_LORA_RANK");
  return out;
}

}  // namespace titan
