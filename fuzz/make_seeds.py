#!/usr/bin/env python3
"""Writes the fuzz targets' starting inputs into OUT/<target>/: valid files of each format (the
project's configs and tokenizer, a small tiktoken file, token shards with their checksum, a
manifest, saved data positions, flight-recorder dumps), from which libFuzzer mutates."""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def crc32c(data: bytes) -> int:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def shard(tokens: list[int], width: int, version: int = 2) -> bytes:
    body = b"".join(t.to_bytes(width, "little") for t in tokens)
    header = b"TITANTOK" + struct.pack("<IIQQQI", version, width, len(tokens), 3, 535,
                                       crc32c(body) if version == 2 else 0)
    return header + b"\0" * (64 - len(header)) + body


def main() -> int:
    out = sys.argv[1]
    seeds: dict[str, dict[str, bytes]] = {t: {} for t in (
        "fuzz_config", "fuzz_tokenizer_json", "fuzz_tiktoken", "fuzz_token_shard", "fuzz_data_position",
        "fuzz_comm_report", "fuzz_checkpoint_metadata")}
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "llama3", "*.toml"))):
        with open(path, "rb") as f:
            seeds["fuzz_config"][os.path.basename(path)] = f.read()
    with open(os.path.join(ROOT, "assets", "tokenizer", "tokenizer.json"), "rb") as f:
        seeds["fuzz_tokenizer_json"]["project.json"] = f.read()
    ranks = [bytes([b]) for b in range(256)] + [b"he", b"ll", b"hell", b"hello", b" w", b"or", b"ld"]
    seeds["fuzz_tiktoken"]["small.model"] = b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(ranks))
    seeds["fuzz_token_shard"]["two_bytes.bin"] = shard([1, 2, 3, 534, 7, 8], 2)
    seeds["fuzz_token_shard"]["four_bytes.bin"] = shard([5, 6, 533, 100000], 4)
    seeds["fuzz_token_shard"]["version1.bin"] = shard([1, 2, 3], 2, version=1)
    seeds["fuzz_token_shard"]["manifest.json"] = json.dumps({
        "tokenizer": "bpe:0123", "vocab_size": 535, "shards": {"shard-00000.bin": {
            "input": "a.jsonl", "input_bytes": 10, "input_mtime_ns": 1, "input_crc32c": "0000abcd", "tokens": 6,
            "documents": 1}}}).encode()
    seeds["fuzz_data_position"]["text.json"] = json.dumps({
        "file": 0, "file_name": "PLACEHOLDER", "offset": 16, "line": 1, "document": 1, "skipped_empty": 0,
        "skipped_malformed": 0}).encode()
    seeds["fuzz_data_position"]["synthetic.json"] = json.dumps({"index": 3}).encode()
    entry = {"group": "world", "seq": 0, "op": "all_reduce", "dtype": "Float", "state": "completed", "numel": 4}
    dump = {"rank": 0, "world_size": 2, "reason": "timeout", "run_id": 5, "dumped_at": 1.5,
            "entries": [entry, dict(entry, seq=1, state="started")]}
    seeds["fuzz_comm_report"]["behind"] = (json.dumps(dump) + "\0" +
                                           json.dumps(dict(dump, rank=1, entries=[entry]))).encode()
    chunk = {"file": "rank-00000.safetensors", "offsets": [0, 0], "sizes": [2, 4], "crc32c": "0a1b2c3d"}
    seeds["fuzz_checkpoint_metadata"]["metadata.json"] = json.dumps({
        "format": "titan.cpp checkpoint", "version": 1, "step": 10, "contents": ["model", "optimizer", "train_state"],
        "world_size": 2, "layout": {"describe": "dp_shard=2"}, "model": {"name": "llama3", "flavor": "debugmodel"},
        "files": {"rank-00000.safetensors": 1024, "rank-00001.safetensors": 1024},
        "tensors": {"model.w": {"dtype": "F32", "global_shape": [4, 4], "chunks": [
            chunk, dict(chunk, file="rank-00001.safetensors", offsets=[2, 0])]},
                    "model.b": {"dtype": "BF16", "global_shape": [], "chunks": [
                        {"file": "rank-00000.safetensors", "offsets": [], "sizes": [], "crc32c": "ffffffff"}]}},
        "scalars": {"train_state": {"step": 10, "tokens_seen": 1000}}}).encode()
    for target, files in seeds.items():
        folder = os.path.join(out, target)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
