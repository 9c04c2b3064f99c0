// A saved data position (JSON, from a checkpoint or --save-state) restored into text files and
// the synthetic source: restored and read on, or refused with titan::Error.
#include <nlohmann/json.hpp>

#include "fuzz/fuzz_util.h"
#include "titan/components/data/documents.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string text = [] {
    const std::string body = "{\"text\": \"one\"}\n{\"text\": \"two\"}\n\n{\"text\": \"three\"}\n";
    return titan::fuzz::write_input("docs.jsonl", reinterpret_cast<const uint8_t*>(body.data()), body.size());
  }();
  const auto state = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (state.is_discarded()) return 0;
  titan::fuzz::expect_clean([&] {
    titan::components::TextOptions opt;
    titan::components::TextFiles files({text}, "fuzz", opt);
    try {
      files.load_state(state);
    } catch (const nlohmann::json::exception&) {
      return;  // the loader turns these into titan::Error (DataLoader::load_state)
    }
    for (int i = 0; i < 4 && files.next(); ++i) {
    }
  });
  titan::fuzz::expect_clean([&] {
    titan::components::SyntheticEnglish synthetic(0, 1, 100);
    try {
      synthetic.load_state(state);
    } catch (const nlohmann::json::exception&) {
      return;
    }
    for (int i = 0; i < 4 && synthetic.next(); ++i) {
    }
  });
  return 0;
}
