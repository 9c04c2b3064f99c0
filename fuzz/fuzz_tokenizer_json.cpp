// tokenizer.json (Hugging Face): any file loads into a tokenizer or is refused with
// titan::Error; a loaded one encodes and decodes text without crashing.
#include "fuzz/fuzz_util.h"
#include "titan/components/tokenizer/bpe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = titan::fuzz::write_input("tokenizer.json", data, size);
  titan::fuzz::expect_clean([&] {
    auto tok = titan::components::BpeTokenizer::from_hf(path, "");
    std::vector<int64_t> ids;
    tok->encode_append("Hello, world! 123 <|end_of_text|> \xc3\xa9t\xc3\xa9", ids, true);
    tok->decode(ids, false);
  });
  return 0;
}
