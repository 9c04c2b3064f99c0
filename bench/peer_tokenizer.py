#!/usr/bin/env python3
"""tiktoken on the same text as bench_tokenizer: one thread over the whole text
(encode_ordinary), then batch encoding of its paragraphs on N threads (encode_ordinary_batch).
Prints JSON lines like bench_tokenizer.
  peer_tokenizer.py TIKTOKEN_RANK_FILE TEXT_FILE [REPEATS] [THREADS]
"""

import json
import sys
import time

import tiktoken
import tiktoken.load

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def main() -> None:
    path, text_file = sys.argv[1], sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    t0 = time.perf_counter()
    ranks = tiktoken.load.load_tiktoken_bpe(path)
    specials = ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(254)]
    enc = tiktoken.Encoding("llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                            special_tokens={s: len(ranks) + i for i, s in enumerate(specials)})
    load = time.perf_counter() - t0
    text = open(text_file, encoding="utf-8").read()
    size = len(text.encode())
    lines = [p + "\n\n" for p in text.split("\n\n")]
    lines[-1] = lines[-1][:-2]
    best, n = 1e30, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = len(enc.encode_ordinary(text))
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"impl": "tiktoken", "mode": "single", "threads": 1, "bytes": size, "tokens": n,
                      "seconds": best, "mb_per_s": size / best / 1e6, "load_seconds": load}))
    best = 1e30
    for _ in range(repeats):
        t0 = time.perf_counter()
        enc.encode_ordinary_batch(lines, num_threads=threads)
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"impl": "tiktoken", "mode": "batch", "threads": threads, "bytes": size,
                      "documents": len(lines), "seconds": best, "mb_per_s": size / best / 1e6}))


if __name__ == "__main__":
    main()
