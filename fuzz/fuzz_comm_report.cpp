// Flight-recorder dumps read by `titan comm-report`: the input is split at the first NUL byte into
// rank 0's and rank 1's files; the report is written or refused with titan::Error.
#include <algorithm>

#include "fuzz/fuzz_util.h"
#include "titan/distributed/comm_report.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t* split = std::find(data, data + size, uint8_t{0});
  titan::fuzz::write_input("traces/rank_0", data, static_cast<size_t>(split - data));
  const uint8_t* second = split == data + size ? split : split + 1;
  titan::fuzz::write_input("traces/rank_1", second, static_cast<size_t>(data + size - second));
  titan::fuzz::expect_clean([&] { titan::distributed::comm_report((titan::fuzz::scratch() / "traces").string()); });
  return 0;
}
