// Unit tests of the checkpoint pieces: CRC-32C, safetensors files (and what a damaged one gives),
// the pickle reader, resharded reads of a saved step, and the Hugging Face state-dict adapter.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "titan/common/crc32c.h"
#include "titan/common/error.h"
#include "titan/components/checkpoint/checkpoint.h"
#include "titan/components/checkpoint/pickle.h"
#include "titan/components/checkpoint/safetensors.h"
#include "titan/models/llama3/state_dict_adapter.h"

namespace fs = std::filesystem;
using namespace titan;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("titan_ckpt_unit_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

}  // namespace

TEST(Crc32c, KnownValuesAndIncremental) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32c(0, s.data(), s.size()), 0xE3069283u);  // the standard check value
  EXPECT_EQ(crc32c(0, nullptr, 0), 0u);
  const uint32_t part = crc32c(0, s.data(), 4);
  EXPECT_EQ(crc32c(part, s.data() + 4, s.size() - 4), 0xE3069283u);
  std::string big(1000, 'x');
  big[500] = 'y';
  EXPECT_NE(crc32c(0, big.data(), big.size()), crc32c(0, std::string(1000, 'x').data(), 1000));
}

TEST(Safetensors, RoundTripsDtypesShapesAndMetadata) {
  const fs::path d = temp_dir("st");
  at::Tensor a = at::arange(12, at::kFloat).view({3, 4});
  at::Tensor b = at::randn({5}).to(at::kBFloat16);
  at::Tensor c = at::scalar_tensor(7.0);  // 0-dim
  const std::string path = (d / "x.safetensors").string();
  components::write_safetensors(path, {{"a", a}, {"b", b}, {"c", c}}, {{"k", "v"}});
  auto f = components::read_safetensors_header(path);
  EXPECT_EQ(f.metadata.at("k"), "v");
  ASSERT_EQ(f.entries.size(), 3u);
  EXPECT_EQ(f.data_start % 8, 0u);
  EXPECT_TRUE(at::equal(components::read_safetensors_tensor(f, *f.find("a")), a));
  EXPECT_TRUE(at::equal(components::read_safetensors_tensor(f, *f.find("b")), b));
  EXPECT_EQ(components::read_safetensors_tensor(f, *f.find("c")).dim(), 0);
  fs::remove_all(d);
}

TEST(Safetensors, DamagedFilesAreClearErrors) {
  const fs::path d = temp_dir("bad");
  const std::string path = (d / "x.safetensors").string();
  components::write_safetensors(path, {{"a", at::ones({64})}}, {});
  auto expect_error = [&](const std::string& needle) {
    try {
      components::read_safetensors_header(path);
      FAIL() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  fs::resize_file(path, fs::file_size(path) - 8);
  expect_error("truncated");
  std::ofstream(path, std::ios::binary) << std::string("\x10\0\0\0\0\0\0\0{not json}      ", 24);
  expect_error("not JSON");
  std::ofstream(path, std::ios::binary) << "abc";
  expect_error("too short");
  fs::remove_all(d);
}

TEST(Pickle, StackMemoAndBadInput) {
  // Pushes an instance, torch.Size, a string, -2 and 1.5, then builds (None, True, <memo 2>), a
  // TUPLE3 over the last three pushes; memo 2 is the class __main__.Point.
  std::string p;
  p += "\x80\x04";
  p += "\x8c\x08__main__\x94\x8c\x05Point\x94\x93\x94";  // STACK_GLOBAL __main__.Point (memo 0,1,2)
  p += ")\x81\x94}\x94(\x8c\x01x\x94K\x03\x8c\x01y\x94]\x94(K\x01K\x02" "eub";  // NEWOBJ, BUILD {x: 3, y: [1, 2]}
  p += "\x8c\x05torch\x94\x8c\x04Size\x94\x93\x94]\x94(K\x04K\x05" "e\x85\x94R\x94";  // torch.Size([4, 5])
  p += "\x8c\x01s\x94J\xfe\xff\xff\xff";  // "s", -2
  p += std::string("G\x3f\xf8\x00\x00\x00\x00\x00\x00", 9);  // 1.5
  p += "N\x88h\x02";  // None, True, memo 2
  p += "\x87\x94";    // TUPLE3
  p += ".";
  EXPECT_THROW(components::unpickle("\x80\x04\xff"), std::runtime_error);
  try {  // the opcode in hexadecimal, as pickletools names it
    components::unpickle("\x80\x04\xfe");
    ADD_FAILURE() << "an unknown opcode was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("opcode 0xfe"), std::string::npos) << e.what();
  }
  EXPECT_THROW(components::unpickle("\x80\x04\x8c\x05" "ab"), std::runtime_error);  // truncated
  auto top = components::unpickle(p);
  ASSERT_EQ(top->kind, components::PyObj::Kind::Tuple);
  EXPECT_EQ(top->items[0]->kind, components::PyObj::Kind::None);
  EXPECT_EQ(top->items[1]->as_int(), 1);
  EXPECT_EQ(top->items[2]->s, "__main__.Point");
}

TEST(Pickle, InstanceAttributesAndTorchSize) {
  std::string p = "\x80\x04";
  p += "\x8c\x08__main__\x8c\x05Point\x93)\x81}(\x8c\x01x" "K\x03\x8c\x01y](K\x01K\x02" "eub";
  p += "\x8c\x05torch\x8c\x04Size\x93](K\x04K\x05" "e\x85R";
  p += "\x86.";
  auto t = components::unpickle(p);
  ASSERT_EQ(t->items.size(), 2u);
  const auto& point = t->items[0];
  EXPECT_TRUE(point->is_call_of("__main__.Point"));
  EXPECT_EQ(point->attr("x")->as_int(), 3);
  EXPECT_EQ(point->attr("y")->as_ints(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(point->attr("z"), nullptr);
  EXPECT_EQ(t->items[1]->as_ints(), (std::vector<int64_t>{4, 5}));
}

TEST(CheckpointReader, ReadsAnyBoxAcrossChunksAndCatchesCorruption) {
  const fs::path d = temp_dir("reader");
  at::Tensor w = at::arange(60, at::kFloat).view({6, 10});
  components::write_checkpoint((d / "step-1").string(), 1, {{"model.w", w}}, {{"name", "test"}});
  components::CheckpointReader r((d / "step-1").string());
  EXPECT_FALSE(r.holds_full_state());
  at::Tensor out = at::empty({2, 3});
  r.read_into("model.w", {{3, 4}, {2, 3}}, out);
  EXPECT_TRUE(at::equal(out, w.narrow(0, 3, 2).narrow(1, 4, 3)));
  EXPECT_TRUE(at::equal(r.read_full("model.w"), w));
  // One flipped byte in the data: the checksum names the tensor.
  const fs::path shard = d / "step-1" / "rank-00000.safetensors";
  std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(fs::file_size(shard) - 4));
  f.put('\x7f');
  f.close();
  components::CheckpointReader again((d / "step-1").string());
  try {
    again.read_full("model.w");
    FAIL() << "corruption not detected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checksum of model.w"), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}

TEST(StateDictAdapter, NamesAndRopePermutationRoundTrip) {
  models::llama3::ModelArgs a;
  a.dim = 64, a.n_heads = 4, a.n_kv_heads = 2, a.n_layers = 1;
  models::llama3::StateDictAdapter ad(a);
  EXPECT_EQ(ad.to_hf_name("layers.0.attention.wk.weight"), "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(ad.to_hf_name("layers.0.feed_forward.w1.weight"), "model.layers.0.mlp.gate_proj.weight");
  EXPECT_EQ(ad.from_hf_name("model.layers.0.post_attention_layernorm.weight"), "layers.0.ffn_norm.weight");
  EXPECT_EQ(ad.from_hf_name("model.layers.0.self_attn.rotary_emb.inv_freq"), std::nullopt);
  at::Tensor wq = at::randn({64, 64}), wk = at::randn({32, 64});
  at::Tensor hq = ad.to_hf("layers.0.attention.wq.weight", wq);
  EXPECT_FALSE(at::equal(hq, wq));
  // Head 0's first half in transformers' order are our even rows.
  EXPECT_TRUE(at::equal(hq.narrow(0, 0, 8), wq.narrow(0, 0, 16).view({8, 2, 64}).select(1, 0)));
  EXPECT_TRUE(at::equal(ad.from_hf("layers.0.attention.wq.weight", hq), wq));
  EXPECT_TRUE(at::equal(ad.from_hf("layers.0.attention.wk.weight", ad.to_hf("layers.0.attention.wk.weight", wk)), wk));
  const auto cfg = ad.hf_config("float32");
  const auto back = models::llama3::StateDictAdapter::args_from_hf_config(cfg, "config.json");
  EXPECT_EQ(back.ffn_hidden_dim(), a.ffn_hidden_dim());
  EXPECT_EQ(back.n_kv_heads, 2);
  EXPECT_TRUE(back.use_scaled_rope);
  auto bad = cfg;
  bad["rope_scaling"]["factor"] = 32.0;
  EXPECT_THROW(models::llama3::StateDictAdapter::args_from_hf_config(bad, "config.json"), Error);
}
