#!/usr/bin/env python3
"""titan generate against transformers' generate on the same weights, in the same run (CPU).

For each shape (the Llama 3 debug model, and a Qwen3-0.6B-shaped model with random weights) and
batch size (1 and 8): a random model is saved as a Hugging Face folder, then both generate
greedily with the KV cache, the same prompts, no EOS stop, and the same thread count. Reported:
time to first token (prefill of the prompt and the first token) and tokens per second after
it, for each side, and their ratio; the KV cache's size against the formula
2 * layers * batch * kv_heads * positions * head_dim * 4 bytes.

Usage: python3 bench/bench_generate.py --titan build/titan [--threads 2] [--new 32] [--shapes debug,qwen3-0.6b]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {
    "debug": ("llama", dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=16,
                            num_key_value_heads=16, vocab_size=2048, rope_theta=500000.0, rms_norm_eps=1e-5,
                            max_position_embeddings=2048, tie_word_embeddings=False)),
    "qwen3-0.6b": ("qwen3", dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                                 num_key_value_heads=8, head_dim=128, vocab_size=151936, rope_theta=1e6,
                                 rms_norm_eps=1e-6, max_position_embeddings=40960, tie_word_embeddings=True)),
}
PROMPT = "The old man walks to the river and sits on the bank, watching the water go by"


def save_random(kind: str, cfg: dict, folder: str) -> None:
    torch.manual_seed(0)
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**cfg))
    model.save_pretrained(folder, safe_serialization=True)


def ours(titan: str, folder: str, batch: int, new: int, threads: int) -> tuple[float, float, float, list[int]]:
    args = [titan, "generate", "--checkpoint", folder, "--tokenizer", os.path.join(ROOT, "assets", "tokenizer"),
            "--max-new-tokens", str(new), "--ignore-eos", "--json"]
    for i in range(batch):
        args += ["--prompt", PROMPT]
    r = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if r.returncode != 0:
        sys.exit(r.stderr)
    m = re.search(r"time to first token ([0-9.]+) ms; ([0-9.]+) tokens/s .* KV cache ([0-9.]+) MiB", r.stderr)
    prompt_ids = json.loads(r.stdout.splitlines()[0])["prompt_ids"]
    return float(m.group(1)) / 1e3, float(m.group(2)), float(m.group(3)), prompt_ids


def theirs(folder: str, batch: int, new: int, prompt_ids: list[int]) -> tuple[float, float]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids] * batch)
    mask = torch.ones_like(ids)
    kw = dict(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=1, eos_token_id=None)
    with torch.no_grad():
        model.generate(**kw, max_new_tokens=2, min_new_tokens=2)  # warm-up
        t = time.perf_counter()
        model.generate(**kw, max_new_tokens=1, min_new_tokens=1)
        first = time.perf_counter() - t
        t = time.perf_counter()
        model.generate(**kw, max_new_tokens=new, min_new_tokens=new)
        total = time.perf_counter() - t
    return first, batch * (new - 1) / max(total - first, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", default=os.path.join(ROOT, "build", "titan"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--shapes", default="debug,qwen3-0.6b")
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    print(f"threads {opts.threads}, {opts.new} new tokens, greedy, float32, CPU: {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print("| model | batch | titan TTFT | transformers TTFT | titan tok/s | transformers tok/s | ratio | KV cache (formula) |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in opts.shapes.split(","):
        kind, cfg = SHAPES[shape]
        with tempfile.TemporaryDirectory() as folder:
            save_random(kind, cfg, folder)
            for batch in (1, 8):
                ttft, tps, kv, prompt_ids = ours(opts.titan, folder, batch, opts.new, opts.threads)
                hf_first, hf_tps = theirs(folder, batch, opts.new, prompt_ids)  # the same prompt ids
                hd = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
                positions = len(prompt_ids) + opts.new
                formula = 2 * cfg["num_hidden_layers"] * batch * cfg["num_key_value_heads"] * positions * hd * 4
                print(f"| {shape} | {batch} | {ttft * 1e3:.0f} ms | {hf_first * 1e3:.0f} ms | {tps:.1f} | {hf_tps:.1f} | "
                      f"{tps / hf_tps:.2f}x | {kv:.2f} MiB ({formula / 1048576:.2f} MiB) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
