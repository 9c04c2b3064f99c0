// Token shards (.bin) and the tokenize manifest: a shard opens with every token readable, or is
// refused with titan::Error (header, size, checksum); a manifest parses or is refused.
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "titan/components/data/documents.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string shard = titan::fuzz::write_input("shard-00000.bin", data, size);
  titan::fuzz::expect_clean([&] {
    titan::components::TokenShards shards({shard}, "fuzz");
    std::vector<int64_t> out(1024);
    for (uint64_t at = 0; at < shards.size(); at += out.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), shards.size() - at));
      shards.read(at, n, out.data());
    }
  });
  titan::fuzz::expect_clean([&] { titan::components::read_and_verify_shard(shard); });
  titan::fuzz::expect_clean([&] {
    titan::components::parse_tokenize_manifest(std::string_view(reinterpret_cast<const char*>(data), size),
                                               "manifest.json");
  });
  return 0;
}
