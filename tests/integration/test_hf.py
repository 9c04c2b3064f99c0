#!/usr/bin/env python3
"""Hugging Face interop against transformers (float32, CPU):

- our export (`titan convert to-hf`) of small random Llama 3 models, with GQA and with tied
  embeddings, loads in transformers.LlamaForCausalLM and gives our logits to 1e-5;
- models saved by transformers (one file, and sharded with an index) convert to titan.cpp
  (`titan convert from-hf`) and give transformers' logits to 1e-5;
- HF -> titan -> HF gives back every tensor byte for byte;
- training starts from a Hugging Face folder (checkpoint.initial_load_in_hf) exactly as from
  its conversion, and checkpoint.last_save_in_hf writes a folder transformers loads;
- the same for Qwen3 (Qwen3ForCausalLM: head_dim apart from hidden_size / heads, q/k norms, GQA,
  tied and untied): our export gives our logits in transformers, transformers' models give their
  logits in titan.cpp, and HF -> titan -> HF is byte for byte;
- the same for Qwen3 MoE (Qwen3MoeForCausalLM: 8 experts, top 2, gate values normalised or
  not): our (E, ...) expert tensors are transformers' experts one by one, both ways;
- the same for DeepSeek-V3 (DeepseekV3ForCausalLM: latent attention with and without a query
  latent, plain RoPE and YaRN, a dense first block, 8 experts in 4 groups with a shared one, the
  expert bias as e_score_correction_bias); a model routed by softmax (torchtitan's debug flavor)
  is refused on export, and with checkpoint.last_save_in_hf before training starts;
- a folder of another model is refused with exit 2;
- the export carries the run's tokenizer: AutoTokenizer on the folder gives the ids training
  reads (BOS in front), for the repository's BPE, Llama 3's tiktoken file (against tiktoken) and
  the built-in byte tokenizer; last_save_in_hf writes into step-N/hf, apart from our shards.

Usage: python3 tests/integration/test_hf.py --titan build/titan --checks build/hf_checks
Exits 77 (skipped) when transformers is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import LAYOUT_BASE, ROOT, Checks, launch_into, step_metrics  # noqa: E402

try:
    import torch
    import transformers
    from safetensors.torch import load_file
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

checks = Checks()
check = checks.check
# Logits of one model in both implementations (float32): the docs claim this bound; the
# measured differences are 1e-8 to 3e-7. Training-loss comparisons keep 1e-5.
LOGITS_TOL = 1e-6
TOL = 1e-5
ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}
TOKENS = [1, 5, 17, 42, 3, 88, 64, 2, 9, 33, 71, 12, 50, 27, 96, 4, 18, 60, 7, 45, 81, 30, 11, 90,
          13, 77, 6, 58, 91, 24, 36, 69, 15, 83, 48, 2, 57, 39, 94, 21]  # 40 tokens


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def our_logits(checks_bin: str, step_dir: str, tmp: str, tokens: list[int]) -> torch.Tensor:
    out = os.path.join(tmp, "logits.safetensors")
    r = run([checks_bin, "logits", "--checkpoint", step_dir, "--tokens", ",".join(map(str, tokens)), "--out", out])
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return load_file(out)["logits"]


def hf_logits(folder: str, tokens: list[int]) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def hf_tensors(folder: str) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors") and not f.startswith("rank-"):
            out.update(load_file(os.path.join(folder, f)))
    return out


def random_hf(folder: str, seed: int, shard: str | None = None, **cfg) -> None:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(rope_theta=500000.0, rope_scaling=ROPE, rms_norm_eps=1e-5,
                                      max_position_embeddings=131072, **cfg)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # norms away from 1, so that a swapped norm shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, safe_serialization=True, **kw)


def random_qwen3(folder: str, seed: int, shard: str | None = None, **cfg) -> None:
    torch.manual_seed(seed)
    config = transformers.Qwen3Config(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                                      head_dim=24, vocab_size=97, rms_norm_eps=1e-6, rope_theta=1000000.0,
                                      max_position_embeddings=4096, **cfg)
    model = transformers.Qwen3ForCausalLM(config)
    with torch.no_grad():  # norms (q_norm and k_norm too) away from 1, so that a swapped or unpermuted norm shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, safe_serialization=True, **kw)


def random_qwen3_moe(folder: str, seed: int, shard: str | None = None, **cfg) -> None:
    torch.manual_seed(seed)
    config = transformers.Qwen3MoeConfig(hidden_size=64, intermediate_size=160, moe_intermediate_size=32, num_experts=8,
                                         num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, head_dim=24, vocab_size=97, rms_norm_eps=1e-6,
                                         rope_theta=1000000.0, max_position_embeddings=4096, **cfg)
    model = transformers.Qwen3MoeForCausalLM(config)
    with torch.no_grad():  # norms away from 1; a router that tells experts apart
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            if name.endswith("mlp.gate.weight"):
                p.normal_(0.0, 0.5)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, safe_serialization=True, **kw)


DEEPSEEK_YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 32.0,
                 "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707}


def random_deepseek(folder: str, seed: int, shard: str | None = None, **cfg) -> None:
    torch.manual_seed(seed)
    config = transformers.DeepseekV3Config(vocab_size=97, hidden_size=64, intermediate_size=96, moe_intermediate_size=24,
                                           num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4,
                                           num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
                                           num_experts_per_tok=2, n_group=4, topk_group=2, routed_scaling_factor=2.5,
                                           norm_topk_prob=True, kv_lora_rank=16, qk_nope_head_dim=16,
                                           qk_rope_head_dim=8, v_head_dim=12, rms_norm_eps=1e-6, **cfg)
    model = transformers.DeepseekV3ForCausalLM(config)
    with torch.no_grad():  # norms away from 1; a router that tells experts apart; a bias that steers the choice
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.uniform_(0.5, 1.5)
            if name.endswith("mlp.gate.weight"):
                p.normal_(0.0, 0.5)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.normal_(0.0, 0.05)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, safe_serialization=True, **kw)


def round_trip(titan: str, hf_checks: str, tmp: str, d: str, name: str) -> None:
    """transformers' folder d/hf -> titan.cpp: its logits; -> HF again: every tensor byte for byte."""
    c = run([titan, "convert", "from-hf", d + "/hf", d + "/titan/step-0"])
    if c.returncode != 0:
        check(f"{name}: convert from-hf", False, c.stderr[-500:])
        return
    err = rel_err(our_logits(hf_checks, d + "/titan/step-0", tmp, TOKENS), hf_logits(d + "/hf", TOKENS))
    check(f"{name}: transformers' model in titan.cpp gives its logits (rel {err:.1e} <= {LOGITS_TOL:g})",
          err <= LOGITS_TOL)
    c = run([titan, "convert", "to-hf", d + "/titan/step-0", d + "/hf2"])
    a, b = hf_tensors(d + "/hf"), hf_tensors(d + "/hf2") if c.returncode == 0 else {}
    same = a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    check(f"{name}: HF -> titan -> HF gives every tensor back byte for byte ({len(a)} tensors)", same,
          c.stderr[-300:] + str(sorted(set(a) ^ set(b)))[:300])


def our_export(titan: str, hf_checks: str, tmp: str, slug: str, model: str, args: dict, seed: int, name: str,
               init_flags: list[str] | None = None):
    """A random model of ours (hf_checks init) exported with `titan convert to-hf`: its config.json,
    the names in its files and the relative difference of transformers' logits from ours; None
    (with a failed check) when either command fails."""
    d = os.path.join(tmp, slug)
    r = run([hf_checks, "init", "--model", model, "--args", json.dumps(args), "--seed", str(seed), "--out",
             d + "/step-0", *(init_flags or [])])
    c = r.returncode == 0 and run([titan, "convert", "to-hf", d + "/step-0", d + "/hf"])
    if not c or c.returncode != 0:
        check(f"{name}: convert to-hf", False, (r.stderr + (c.stderr if c else ""))[-500:])
        return None
    err = rel_err(hf_logits(d + "/hf", TOKENS), our_logits(hf_checks, d + "/step-0", tmp, TOKENS))
    return json.load(open(d + "/hf/config.json")), hf_tensors(d + "/hf").keys(), err


LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
TEXTS = ["The old man walks to the river.", "Hello, world!  Tabs\tand\nnew lines\r\n", "naïve café 東京 🙂 12345",
         "it's   spaced    out", "x" * 300, "  leading and trailing  "]


def tokenizer_matches(titan: str, folder: str, tokenizer: str, name: str) -> None:
    """AutoTokenizer on an exported folder gives the ids `titan tokenizer encode --bos` gives
    (training's BOS in front), and its config.json names the same BOS and EOS."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ours = subprocess.run([titan, "tokenizer", "encode", "--tokenizer", tokenizer, "--bos", "--jsonl"], cwd=ROOT,
                          input="".join(json.dumps(t) + "\n" for t in TEXTS), capture_output=True, text=True)
    want = [[int(x) for x in line.split()] for line in ours.stdout.splitlines()]
    got = [tok(t)["input_ids"] for t in TEXTS]
    config = json.load(open(os.path.join(folder, "config.json")))
    generation = json.load(open(os.path.join(folder, "generation_config.json")))
    check(f"{name} gives the ids training reads, BOS in front ({len(TEXTS)} texts)",
          ours.returncode == 0 and got == want and config.get("bos_token_id") == want[0][0]
          and generation.get("bos_token_id") == want[0][0] and config.get("eos_token_id") == tok.eos_token_id,
          f"{ours.stderr[-200:]} ours {str(want)[:200]} HF {str(got)[:200]} config {config.get('bos_token_id')}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    ap.add_argument("--checks", required=True)
    opts = ap.parse_args()
    titan, hf_checks = os.path.abspath(opts.titan), os.path.abspath(opts.checks)
    tmp = scratch_dir("titan_hf_")

    # ---- titan.cpp -> transformers ----------------------------------------------------------------
    small = {"dim": 64, "n_layers": 3, "n_heads": 4, "vocab_size": 97, "multiple_of": 32, "norm_eps": 1e-5,
             "rope_theta": 500000.0, "use_scaled_rope": True, "max_seq_len": 64}
    for slug, name, extra in [
            ("tied", "GQA + tied embeddings", {"n_kv_heads": 2, "tied_embeddings": True, "ffn_dim_multiplier": None}),
            ("mult", "GQA, FFN multiplier 1.3", {"n_kv_heads": 1, "tied_embeddings": False, "ffn_dim_multiplier": 1.3})]:
        d = os.path.join(tmp, "ours_" + slug)
        r = run([hf_checks, "init", "--args", json.dumps({**small, **extra}), "--seed", "3", "--out", d + "/step-0"])
        c = r.returncode == 0 and run([titan, "convert", "to-hf", d + "/step-0", d + "/hf"])
        if not c or c.returncode != 0:
            check(f"{name}: convert to-hf", False, (r.stderr + (c.stderr if c else ""))[-500:])
            continue
        err = rel_err(hf_logits(d + "/hf", TOKENS), our_logits(hf_checks, d + "/step-0", tmp, TOKENS))
        check(f"{name}: our export in transformers gives our logits (rel {err:.1e} <= {LOGITS_TOL:g})",
              err <= LOGITS_TOL)
        if extra["tied_embeddings"]:
            names = hf_tensors(d + "/hf").keys()
            check(f"{name}: no lm_head.weight in the export", "lm_head.weight" not in names, str(sorted(names))[:200])

    # ---- transformers -> titan.cpp, and back ------------------------------------------------------------
    for slug, name, shard, cfg in [
            ("tied", "tied, one file", None, dict(tie_word_embeddings=True, num_key_value_heads=2)),
            ("sharded", "untied, sharded with an index", "60KB", dict(tie_word_embeddings=False, num_key_value_heads=1))]:
        d = os.path.join(tmp, "theirs_" + slug)
        random_hf(d + "/hf", 5, shard, hidden_size=64, intermediate_size=192, num_hidden_layers=3,
                  num_attention_heads=4, vocab_size=97, **cfg)
        if shard:
            check(f"{name}: transformers wrote an index", os.path.exists(d + "/hf/model.safetensors.index.json"))
        round_trip(titan, hf_checks, tmp, d, name)

    # ---- Qwen3, both ways ---------------------------------------------------------------------------------
    qsmall = {"dim": 64, "n_layers": 3, "n_heads": 4, "n_kv_heads": 2, "head_dim": 24, "hidden_dim": 160,
              "vocab_size": 97, "norm_eps": 1e-6, "rope_theta": 1000000.0, "qk_norm": True, "max_seq_len": 64}
    for tied in (True, False):
        name = f"Qwen3 ({'tied' if tied else 'untied'}, head_dim 24, GQA)"
        d = os.path.join(tmp, f"qwen_ours_{tied}")
        r = run([hf_checks, "init", "--model", "qwen3", "--args", json.dumps({**qsmall, "tied_embeddings": tied}),
                 "--seed", "4", "--out", d + "/step-0"])
        c = r.returncode == 0 and run([titan, "convert", "to-hf", d + "/step-0", d + "/hf"])
        if not c or c.returncode != 0:
            check(f"{name}: convert to-hf", False, (r.stderr + (c.stderr if c else ""))[-500:])
            continue
        config = json.load(open(d + "/hf/config.json"))
        err = rel_err(hf_logits(d + "/hf", TOKENS), our_logits(hf_checks, d + "/step-0", tmp, TOKENS))
        check(f"{name}: our export loads as {config.get('architectures')} and gives our logits "
              f"(rel {err:.1e} <= {LOGITS_TOL:g})", config.get("architectures") == ["Qwen3ForCausalLM"] and err <= LOGITS_TOL)
    for slug, name, shard, cfg in [
            ("tied", "Qwen3 from transformers, tied, one file", None, dict(tie_word_embeddings=True, num_key_value_heads=2)),
            ("sharded", "Qwen3 from transformers, untied, sharded", "60KB",
             dict(tie_word_embeddings=False, num_key_value_heads=1))]:
        d = os.path.join(tmp, "qwen_theirs_" + slug)
        random_qwen3(d + "/hf", 6, shard, **cfg)
        round_trip(titan, hf_checks, tmp, d, name)
    # ---- Qwen3 MoE, both ways: the experts one by one in transformers' files, (E, ...) in ours ----------------
    moe = {**qsmall, "n_layers": 2, "tied_embeddings": False, "moe_inter_dim": 32,
           "moe_args": {"num_experts": 8, "num_shared_experts": 0, "score_func": "softmax", "route_norm": True,
                        "route_scale": 1.0, "gate_bias": False, "score_before_experts": False, "top_k": 2,
                        "load_balance_coeff": 1e-3}}
    exported = our_export(titan, hf_checks, tmp, "qwen_moe_ours", "qwen3", moe, 4, "Qwen3 MoE")
    if exported:
        config, names, err = exported
        check(f"Qwen3 MoE (8 experts, top 2): our export loads as {config.get('architectures')} with each expert's "
              f"gate/up/down_proj and gives our logits (rel {err:.1e} <= {LOGITS_TOL:g})",
              config.get("architectures") == ["Qwen3MoeForCausalLM"] and err <= LOGITS_TOL
              and "model.layers.1.mlp.experts.7.down_proj.weight" in names and "model.layers.0.mlp.gate.weight" in names,
              str(sorted(names))[:300])
    for slug, name, shard, cfg in [
            ("norm", "Qwen3 MoE from transformers, gate values normalised, one file", None, dict(norm_topk_prob=True)),
            ("sharded", "Qwen3 MoE from transformers, gate values as they are, sharded", "60KB",
             dict(norm_topk_prob=False))]:
        d = os.path.join(tmp, "qwen_moe_theirs_" + slug)
        random_qwen3_moe(d + "/hf", 8, shard, **cfg)
        round_trip(titan, hf_checks, tmp, d, name)

    # ---- DeepSeek-V3, both ways: the latent attention, dense first block, experts and their bias --------------
    for slug, name, shard, cfg in [
            ("plain", "DeepSeek-V3 from transformers (no query latent, plain RoPE, one file)", None,
             dict(q_lora_rank=None, max_position_embeddings=4096)),
            ("yarn", "DeepSeek-V3 from transformers (query latent, YaRN past 16 positions, sharded)", "60KB",
             dict(q_lora_rank=32, max_position_embeddings=64, rope_scaling=DEEPSEEK_YARN))]:
        d = os.path.join(tmp, "deepseek_theirs_" + slug)
        random_deepseek(d + "/hf", 12, shard, **cfg)
        round_trip(titan, hf_checks, tmp, d, name)
        if slug == "yarn":
            meta = json.load(open(d + "/titan/step-0/metadata.json")) if os.path.exists(d + "/titan/step-0") else {}
            bias = hf_tensors(d + "/hf")["model.layers.1.mlp.gate.e_score_correction_bias"]
            check("DeepSeek-V3: e_score_correction_bias is the expert bias, YaRN's settings are kept",
                  meta.get("model", {}).get("args", {}).get("rope_factor") == 4.0 and float(bias.abs().max()) > 0,
                  str(meta.get("model", {}).get("args"))[:400])
    ds = {"dim": 64, "n_layers": 3, "n_dense_layers": 1, "n_heads": 4, "inter_dim": 96, "moe_inter_dim": 24,
          "vocab_size": 97, "norm_eps": 1e-6, "final_norm_eps": 1e-6, "max_seq_len": 64,
          "moe_args": {"num_experts": 8, "num_shared_experts": 1, "score_func": "sigmoid", "route_norm": True,
                       "route_scale": 2.5, "gate_bias": False, "score_before_experts": False, "top_k": 2,
                       "load_balance_coeff": 1e-3, "num_expert_groups": 4, "num_limited_groups": 2},
          "q_lora_rank": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 12,
          "attn_type": "sdpa", "attn_mask_type": "causal", "original_seq_len": 16, "rope_theta": 10000.0,
          "rope_factor": 4.0, "beta_fast": 32, "beta_slow": 1, "mscale": 0.707}
    exported = our_export(titan, hf_checks, tmp, "deepseek_ours", "deepseek_v3", ds, 5, "DeepSeek-V3",
                          ["--random-buffers"])
    if exported:
        config, names, err = exported
        check(f"DeepSeek-V3 (query latent, YaRN, 8 experts in 4 groups, a random expert bias): our export loads as "
              f"{config.get('architectures')} and gives our logits (rel {err:.1e} <= {LOGITS_TOL:g})",
              config.get("architectures") == ["DeepseekV3ForCausalLM"] and err <= LOGITS_TOL
              and "model.layers.2.mlp.gate.e_score_correction_bias" in names
              and "model.layers.0.mlp.gate_proj.weight" in names and "model.layers.1.self_attn.q_a_proj.weight" in names
              and "model.layers.2.mlp.experts.7.down_proj.weight" in names, str(sorted(names))[:300])
    # A model built as torchtitan builds it: its final norm takes float32's epsilon, transformers' rms_norm_eps.
    d = os.path.join(tmp, "deepseek_torchtitan_eps")
    r = run([hf_checks, "init", "--model", "deepseek_v3", "--args",
             json.dumps({k: v for k, v in ds.items() if k != "final_norm_eps"}), "--seed", "5", "--out", d + "/step-0"])
    c = run([titan, "convert", "to-hf", d + "/step-0", d + "/hf"])
    check("DeepSeek-V3 with torchtitan's final norm: the export says that transformers' final norm differs",
          r.returncode == 0 and c.returncode == 0 and "final norm uses epsilon 1.19209e-07" in c.stdout,
          (c.stdout + c.stderr)[-400:])
    # torchtitan's own debug flavor routes by softmax, which transformers' DeepSeek-V3 cannot.
    d = os.path.join(tmp, "deepseek_softmax")
    r = run([hf_checks, "init", "--model", "deepseek_v3", "--args",
             json.dumps({**ds, "moe_args": {**ds["moe_args"], "score_func": "softmax"}}), "--seed", "5", "--out",
             d + "/step-0"])
    c = run([titan, "convert", "to-hf", d + "/step-0", d + "/hf"])
    check("DeepSeek-V3 routed by softmax: the export is refused (exit 2, naming score_func), nothing written",
          r.returncode == 0 and c.returncode == 2 and 'score_func "softmax"' in c.stderr
          and not os.path.exists(d + "/hf"), c.stderr[-400:])
    dump = os.path.join(tmp, "deepseek_last_save")
    outs = launch_into(titan, 1, ["--job.config_file", "configs/deepseek_v3/debug_model.toml", "--training.steps", "1",
                                  "--checkpoint.enable", "--checkpoint.last_save_in_hf"], dump)
    check("training DeepSeek-V3's softmax debug model with last_save_in_hf is refused before the first step (exit 2)",
          outs[0][0] == 2 and "score_func" in outs[0][2] and "step:" not in outs[0][1], outs[0][2][-400:])

    c = run([titan, "convert", "from-hf", os.path.join(tmp, "qwen_theirs_tied", "hf"), os.path.join(tmp, "q_as_llama", "step-0")])
    meta = json.load(open(os.path.join(tmp, "q_as_llama", "step-0", "metadata.json"))) if c.returncode == 0 else {}
    check("a converted Qwen3 folder records model qwen3", meta.get("model", {}).get("name") == "qwen3", c.stderr[-300:])

    # ---- training from a Hugging Face folder, and the final save in HF format ------------------------------
    debug_hf = os.path.join(tmp, "debug_hf")
    random_hf(debug_hf, 11, None, hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=16,
              num_key_value_heads=16, vocab_size=2048, tie_word_embeddings=False)
    conv = os.path.join(tmp, "debug_conv", "step-0")
    c = run([titan, "convert", "from-hf", debug_hf, conv])
    check("the debug-shaped model converts", c.returncode == 0, c.stderr[-300:])
    base = LAYOUT_BASE + ["--training.local_batch_size", "4", "--training.steps", "3", "--checkpoint.enable",
                          "--checkpoint.interval", "100"]
    from_hf = os.path.join(tmp, "train_from_hf")
    outs = launch_into(titan, 1, base + ["--checkpoint.initial_load_path", debug_hf, "--checkpoint.initial_load_in_hf",
                                         "--checkpoint.last_save_in_hf"], from_hf)
    from_conv = os.path.join(tmp, "train_from_conv")
    outs2 = launch_into(titan, 2, base + ["--training.local_batch_size", "2", "--checkpoint.initial_load_path", conv],
                        from_conv)
    if outs[0][0] == 0 and outs2[0][0] == 0 and outs2[1][0] == 0:
        a, b = step_metrics(from_hf), step_metrics(from_conv)
        worst = max(abs(x["loss"] - y["loss"]) / y["loss"] for x, y in zip(a, b))
        check(f"training from the HF folder equals FSDP(2) from its conversion (rel {worst:.1e})",
              len(a) == 3 and worst <= TOL, str([(x["loss"], y["loss"]) for x, y in zip(a, b)]))
        final = os.path.join(from_hf, "checkpoint", "step-3", "hf")
        ok = os.path.exists(os.path.join(final, "config.json"))
        check("last_save_in_hf writes step-3/hf, apart from the step folder's own files",
              ok and not os.path.exists(os.path.join(final, "..", "config.json")), str(os.listdir(final + "/..")))
        if ok:
            tokenizer_matches(titan, final, "./assets/tokenizer", "last_save_in_hf: AutoTokenizer on step-3/hf")
        err = rel_err(hf_logits(final, TOKENS), our_logits(hf_checks, os.path.dirname(final), tmp, TOKENS)) if ok else 1.0
        check(f"last_save_in_hf: transformers loads the final checkpoint and gives our logits (rel {err:.1e} <= "
              f"{LOGITS_TOL:g})", ok and err <= LOGITS_TOL)
    else:
        check("training from HF weights", False, (outs[0][2] + outs2[0][2])[-800:])

    # ---- the tokenizer in the export ----------------------------------------------------------------
    for slug, tokenizer, vocab in (("tiktoken", os.path.join(ROOT, "tests", "assets", "llama3"), 128256),
                                   ("bytes", "builtin:bytes", 258)):
        d = os.path.join(tmp, "tok_" + slug)
        r = run([hf_checks, "init", "--args", json.dumps({**small, "vocab_size": vocab, "n_kv_heads": 4,
                                                           "tied_embeddings": False, "ffn_dim_multiplier": None}),
                 "--seed", "3", "--out", d + "/step-0"])
        c = run([titan, "convert", "to-hf", d + "/step-0", d + "/hf", "--tokenizer", tokenizer])
        if r.returncode != 0 or c.returncode != 0:
            check(f"to-hf --tokenizer {tokenizer}", False, (r.stderr + c.stderr)[-500:])
            continue
        tokenizer_matches(titan, d + "/hf", tokenizer, f"to-hf --tokenizer {slug}: AutoTokenizer")
        if slug == "tiktoken":
            import tiktoken
            import tiktoken.load
            specials = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001}
            enc = tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN, special_tokens=specials,
                                    mergeable_ranks=tiktoken.load.load_tiktoken_bpe(os.path.join(tokenizer,
                                                                                                 "tokenizer.model")))
            tok = transformers.AutoTokenizer.from_pretrained(d + "/hf")
            with open(os.path.join(ROOT, "tests", "assets", "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
                texts = TEXTS + f.read().split("\n\n")[:2000]
            bad = [t for t in texts if tok(t, add_special_tokens=False)["input_ids"] != enc.encode_ordinary(t)]
            check(f"the exported Llama 3 tokenizer.json encodes as tiktoken ({len(texts)} texts)", not bad, str(bad[:2]))
    c = run([titan, "convert", "to-hf", os.path.join(tmp, "ours_tied", "step-0"), os.path.join(tmp, "toosmall"),
             "--tokenizer", os.path.join(ROOT, "tests", "assets", "llama3")])
    check("a tokenizer larger than the model's vocabulary is refused",
          c.returncode == 2 and "128256 ids" in c.stderr, c.stderr[-300:])

    # ---- another model is refused -----------------------------------------------------------------
    outs = launch_into(titan, 1, base + ["--checkpoint.initial_load_path", os.path.join(tmp, "theirs_tied", "hf"),
                                         "--checkpoint.initial_load_in_hf"], os.path.join(tmp, "wrong"))
    check("a Hugging Face model of another shape: exit 2 naming the difference",
          outs[0][0] == 2 and "hidden_size is 64" in outs[0][2], outs[0][2][-300:])
    os.makedirs(os.path.join(tmp, "empty"))
    c = run([titan, "convert", "from-hf", os.path.join(tmp, "empty"), os.path.join(tmp, "x")])
    check("convert from-hf of a folder without weights: exit 2", c.returncode == 2 and "model.safetensors" in c.stderr,
          c.stderr[-300:])
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
