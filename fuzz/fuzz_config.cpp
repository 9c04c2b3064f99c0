// The TOML loader: any text either loads into a JobConfig that prints back as TOML loading to
// the same values, or is refused with titan::Error.
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "titan/config/job_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  titan::fuzz::expect_clean([&] {
    titan::config::JobConfig cfg;
    titan::config::merge_toml(cfg, text, "fuzz.toml");
    const std::string back = cfg.to_toml();
    titan::config::JobConfig again;
    titan::config::merge_toml(again, back, "printed.toml");
    if (again.to_toml() != back) std::abort();  // printing is a fixed point
  });
  return 0;
}
