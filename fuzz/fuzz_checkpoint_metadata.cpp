// A checkpoint's metadata.json: parsed and checked whole, or refused with titan::Error; what
// passes has every field the readers use, of the right type (they index it without checks).
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "titan/components/checkpoint/checkpoint_metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  titan::fuzz::expect_clean([&] {
    const auto m = titan::components::parse_checkpoint_metadata(
        std::string_view(reinterpret_cast<const char*>(data), size), "metadata.json");
    // What checkpoint_info and the loader read, read the same way: must not throw.
    int64_t n = m.at("step").get<int64_t>();
    for (const auto& [key, t] : m.at("tensors").items()) {
      for (const auto& d : t.at("global_shape")) n += d.get<int64_t>();
      for (const auto& c : t.at("chunks")) {
        n += static_cast<int64_t>(c.at("offsets").get<std::vector<int64_t>>().size());
        n += static_cast<int64_t>(c.at("sizes").get<std::vector<int64_t>>().size());
        n += static_cast<int64_t>(c.at("file").get<std::string>().size() + c.at("crc32c").get<std::string>().size());
      }
      n += static_cast<int64_t>(t.at("dtype").get<std::string>().size());
    }
    for (const auto& c : m.at("contents")) n += static_cast<int64_t>(c.get<std::string>().size());
    if (n < 0) std::abort();
  });
  return 0;
}
