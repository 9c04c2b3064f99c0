#!/usr/bin/env python3
"""titan generate against transformers' generate (float32, CPU):

- greedy ids equal transformers' `generate(do_sample=False)` for 64 new tokens, for a random small
  Llama, a random small Qwen3 (GQA) and a random small Qwen3 MoE (8 experts, top 2), one prompt and a left-padded batch of prompts of
  different lengths, reading the Hugging Face folder directly;
- generation with the key/value cache equals generation that reruns the whole prefix;
- the same seed gives the same sampled ids, another seed others; top-k 1 is greedy;
- a trained titan.cpp checkpoint generates with the tokenizer its run recorded;
- bad input exits 2 with one message: no such folder, a tokenizer with more ids than the model,
  a prompt past the model's context.

Usage: python3 tests/integration/test_generate.py --titan build/titan
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
from launch import ROOT, Checks, launch_into  # noqa: E402

try:
    import torch
    import transformers
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

checks = Checks()
check = checks.check
TOKENIZER = os.path.join(ROOT, "assets", "tokenizer")  # 535 ids
PROMPTS = ["The old man walks to the river.", "Hello", "A much longer prompt, with several words in it, to pad the others"]
NEW = 64


def titan_generate(titan: str, folder: str, prompts: list[str], *extra: str) -> tuple[subprocess.CompletedProcess, list]:
    args = [titan, "generate", "--checkpoint", folder, "--json", "--max-new-tokens", str(NEW), *extra]
    for p in prompts:
        args += ["--prompt", p]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    rows = [json.loads(line) for line in r.stdout.splitlines()] if r.returncode == 0 else []
    return r, rows


def hf_greedy(folder: str, prompt_ids: list[list[int]], pad: int) -> list[list[int]]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.eval()
    width = max(map(len, prompt_ids))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW,
                             min_new_tokens=NEW, pad_token_id=pad, eos_token_id=None)
    return [row[width:].tolist() for row in out]


def random_folder(kind: str, folder: str, seed: int) -> None:
    torch.manual_seed(seed)
    common = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=535, max_position_embeddings=256, tie_word_embeddings=False)
    if kind == "llama":
        config = transformers.LlamaConfig(rope_theta=500000.0, rms_norm_eps=1e-5, **common)
        model = transformers.LlamaForCausalLM(config)
    elif kind == "qwen3":
        config = transformers.Qwen3Config(head_dim=24, rope_theta=1000000.0, rms_norm_eps=1e-6, **common)
        model = transformers.Qwen3ForCausalLM(config)
    else:  # qwen3_moe: 8 experts, top 2
        config = transformers.Qwen3MoeConfig(head_dim=24, rope_theta=1000000.0, rms_norm_eps=1e-6, num_experts=8,
                                             num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
                                             **common)
        model = transformers.Qwen3MoeForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so that the logits are far apart
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    model.save_pretrained(folder, safe_serialization=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    tmp = scratch_dir("titan_generate_")
    eos = 1  # the repository's tokenizer: <|end_of_text|> is id 1, titan generate pads with it

    for kind in ("llama", "qwen3", "qwen3_moe"):
        folder = os.path.join(tmp, kind)
        random_folder(kind, folder, 5)
        for prompts, label in ((PROMPTS[:1], "one prompt"), (PROMPTS, "a padded batch of 3")):
            r, rows = titan_generate(titan, folder, prompts, "--tokenizer", TOKENIZER, "--ignore-eos")
            if r.returncode != 0 or len(rows) != len(prompts):
                check(f"{kind}, {label}: titan generate", False, r.stderr[-500:])
                continue
            want = hf_greedy(folder, [row["prompt_ids"] for row in rows], eos)
            got = [row["ids"] for row in rows]
            check(f"{kind}, {label}: greedy ids equal transformers' generate ({NEW} new tokens each)", got == want,
                  f"ours {str(got)[:300]}\nHF   {str(want)[:300]}")
            check(f"{kind}, {label}: time to first token and tokens/s reported",
                  "time to first token" in r.stderr and "tokens/s" in r.stderr, r.stderr[-300:])
            if label == "one prompt":
                continue
            r2, rows2 = titan_generate(titan, folder, prompts, "--tokenizer", TOKENIZER, "--ignore-eos", "--no-kv-cache")
            check(f"{kind}, {label}: with the KV cache = rerunning the whole prefix every step",
                  r2.returncode == 0 and [x["ids"] for x in rows2] == got, r2.stderr[-300:])
        sample = ["--tokenizer", TOKENIZER, "--ignore-eos", "--temperature", "0.8", "--top-p", "0.9", "--top-k", "50"]
        a = titan_generate(titan, folder, PROMPTS, *sample, "--seed", "3")[1]
        b = titan_generate(titan, folder, PROMPTS, *sample, "--seed", "3")[1]
        c = titan_generate(titan, folder, PROMPTS, *sample, "--seed", "4")[1]
        ids = lambda rows: [x["ids"] for x in rows]  # noqa: E731
        check(f"{kind}: the same seed samples the same ids, another seed others",
              a and ids(a) == ids(b) and ids(a) != ids(c))
        k1 = titan_generate(titan, folder, PROMPTS, "--tokenizer", TOKENIZER, "--ignore-eos", "--temperature", "1.5",
                            "--top-k", "1")[1]
        greedy = titan_generate(titan, folder, PROMPTS, "--tokenizer", TOKENIZER, "--ignore-eos")[1]
        check(f"{kind}: --top-k 1 samples the greedy ids", k1 and ids(k1) == ids(greedy))

    # A checkpoint trained here, with the tokenizer its run recorded.
    dump = os.path.join(tmp, "trained")
    outs = launch_into(titan, 1, ["--job.config_file", "configs/llama3/debug_model.toml", "--training.steps", "2",
                                  "--training.seq_len", "64", "--training.mixed_precision_param", "float32",
                                  "--checkpoint.enable", "--checkpoint.interval", "2"], dump)
    step = os.path.join(dump, "checkpoint", "step-2")
    r = subprocess.run([titan, "generate", "--checkpoint", step, "--prompt", "Once upon a time", "--max-new-tokens", "8"],
                       cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=120)
    check("a trained checkpoint generates with its recorded tokenizer (text after the prompt, exit 0)",
          outs[0][0] == 0 and r.returncode == 0 and r.stdout.startswith("Once upon a time") and
          len(r.stdout.strip()) > len("Once upon a time"), (r.stdout + r.stderr)[-400:])
    # A checkpoint saved by FSDP(2), read whole.
    fsdp = os.path.join(tmp, "trained_fsdp")
    outs = launch_into(titan, 2, ["--job.config_file", "configs/qwen3/debug_model.toml", "--training.steps", "2",
                                  "--training.seq_len", "64", "--training.mixed_precision_param", "float32",
                                  "--training.local_batch_size", "4", "--model.n_layers", "2",
                                  "--checkpoint.enable", "--checkpoint.interval", "2"], fsdp)
    r = subprocess.run([titan, "generate", "--checkpoint", os.path.join(fsdp, "checkpoint", "step-2"), "--json",
                        "--prompt", "Once upon a time", "--max-new-tokens", "8", "--ignore-eos"],
                       cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=120)
    rows = [json.loads(line) for line in r.stdout.splitlines()] if r.returncode == 0 else []
    check("a Qwen3 checkpoint saved by FSDP(2) generates 8 tokens",
          all(o[0] == 0 for o in outs) and len(rows) == 1 and len(rows[0]["ids"]) == 8, (r.stdout + r.stderr)[-400:])
    r = subprocess.run([titan, "generate", "--checkpoint", step, "--max-new-tokens", "4"], cwd=ROOT, input="one\ntwo\n", errors="replace",
                       capture_output=True, text=True, timeout=120)
    check("prompts from standard input, one per line, printed per prompt",
          r.returncode == 0 and r.stdout.startswith("[1] one") and "\n[2] two" in r.stdout, (r.stdout + r.stderr)[-300:])

    # Bad input: one message, exit 2.
    for label, args, needle in [
            ("no such folder", ["--checkpoint", os.path.join(tmp, "nothing"), "--prompt", "x"], "is not a folder"),
            ("a tokenizer with more ids than the model", ["--checkpoint", step, "--prompt", "x", "--tokenizer",
                                                          os.path.join(ROOT, "tests", "assets", "llama3")], "128256 ids"),
            ("a prompt past the context", ["--checkpoint", step, "--prompt", "word " * 80], "context of 64 positions"),
            ("a bad temperature", ["--checkpoint", step, "--prompt", "x", "--temperature", "-1"], "temperature")]:
        r = subprocess.run([titan, "generate", *args], cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=120)
        check(f"generate refuses {label}: exit 2 naming it", r.returncode == 2 and needle in r.stderr
              and r.stderr.count("titan: error:") == 1, r.stderr[-300:])
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
