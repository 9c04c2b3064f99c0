#include "titan/components/tokenizer.h"

#include <filesystem>

#include "titan/common/error.h"

namespace titan::components {

std::vector<int64_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids)
    if (id >= 0 && id < 256) out.push_back(static_cast<char>(id));
  return out;
}

std::unique_ptr<Tokenizer> build_tokenizer(const std::string& path, const std::string& key) {
  if (path == "builtin:bytes") return std::make_unique<ByteTokenizer>();
  namespace fs = std::filesystem;
  if (fs::exists(path)) {
    throw Error(key + " = \"" + path + "\": loading tokenizer files (tokenizer.model, "
                "tokenizer.json) is not supported yet",
                "use " + key + " = \"builtin:bytes\" (the built-in byte-level tokenizer)");
  }
  throw Error(key + " = \"" + path + "\": no such tokenizer folder",
              "use " + key + " = \"builtin:bytes\" for the built-in byte-level tokenizer");
}

}  // namespace titan::components
