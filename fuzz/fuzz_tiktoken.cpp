// tokenizer.model (tiktoken ranks, base64 and a number per line): loads or is refused with
// titan::Error; a loaded one encodes and decodes.
#include "fuzz/fuzz_util.h"
#include "titan/components/tokenizer/bpe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = titan::fuzz::write_input("tokenizer.model", data, size);
  titan::fuzz::expect_clean([&] {
    auto tok = titan::components::BpeTokenizer::from_tiktoken(path);
    std::vector<int64_t> ids;
    tok->encode_append("Hello, world! 123 \xc3\xa9t\xc3\xa9", ids, false);
    tok->decode(ids, false);
  });
  return 0;
}
