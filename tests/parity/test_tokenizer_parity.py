#!/usr/bin/env python3
"""Parity of `titan tokenizer` with the reference tokenizers: pip `tiktoken` for the Llama 3
rank file, Hugging Face `tokenizers` for tokenizer.json files (trained here, in several
layouts), and HF loading what `titan tokenizer train` writes. Every comparison is of exact
token ids (or exact decoded bytes); a mismatch prints the first few texts with both id lists.

The CLI is started a few times per tokenizer, never per text: texts go through `--jsonl`
(one JSON string per stdin line, one line of ids per output line).

Reference rules (what each `titan tokenizer` call is compared with):
  encode                 tiktoken: enc.encode_ordinary(s)
                         HF: tok.encode(s, add_special_tokens=False).ids with
                             tok.encode_special_tokens = True, so "<|begin_of_text|>" in the
                             text is ordinary text and the post-processor adds nothing
  encode --allow-special tiktoken: enc.encode(s, allowed_special="all")
                         HF: the same, with encode_special_tokens = False (special tokens in
                             the text become their ids; lstrip/rstrip of added tokens apply)
  encode --bos --eos     torchtitan's HuggingFaceTokenizer.encode(s, add_bos=True,
                         add_eos=True), restated in `torchtitan_bos_eos` below; for the tiktoken
                         file: [128000] + ids + [128001]
  decode                 tiktoken: enc.decode_bytes(ids), byte for byte
                         HF: the bytes behind each token (ByteLevel table; added tokens as
                             their text), byte for byte; HF's own tok.decode(ids,
                             skip_special_tokens=False) is that with invalid UTF-8 replaced by
                             U+FFFD, which the script also checks, so both agree
The tokenizer_config.json key add_bos_token is not applied by a plain `encode` (torchtitan
only uses it when its encode() is called without add_bos, which its data loader never does).

Usage: python3 tests/parity/test_tokenizer_parity.py --titan build/titan [--assets tests/assets]
       python3 tests/parity/test_tokenizer_parity.py --selfcheck   (references only, no CLI)
Prints one line per check and `N passed, N failed`.
Exit: 0 all passed, 1 a check failed, 2 usage error, 77 skipped (tiktoken or tokenizers cannot
be imported, or an asset under tests/assets is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
import launch  # noqa: E402,F401  (kills whatever this test leaves running when it ends)
import time

try:
    import regex  # installed with tiktoken, which needs it
    import tiktoken
    import tiktoken.load
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
except ImportError as error:
    print(f"SKIPPED: tiktoken (with its regex) and tokenizers are needed ({error})")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, OMP_NUM_THREADS="1")
CLI_TIMEOUT_S = 300

# Llama 3's pre-tokenization pattern (as in Meta's tokenizer.py and its HF tokenizer.json).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<pad>"
LLAMA3_BOS_ID, LLAMA3_EOS_ID = 128000, 128001


QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")


def llama3_special_tokens() -> dict[str, int]:
    names = [BOS, EOS] + [f"<|reserved_special_token_{i}|>" for i in range(4)]
    names += ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(5, 251)]
    return {name: 128000 + i for i, name in enumerate(names)}


results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"), flush=True)
    return ok


def clip(value, width: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}...({len(text)} chars)"


# ---- running the CLI ------------------------------------------------------------------------

def run_titan(titan: str, args: list[str], stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([titan, "tokenizer", *args], cwd=ROOT, env=ENV, input=stdin,
                          capture_output=True, timeout=CLI_TIMEOUT_S)


def cli_failure(name: str, p: subprocess.CompletedProcess) -> None:
    check(name, False, f"rc={p.returncode} stderr={p.stderr[-600:].decode('utf-8', 'replace')!r}")


def parse_ids(line: bytes) -> list[int]:
    return [int(field) for field in line.split()]


def output_lines(stdout: bytes) -> list[bytes]:
    lines = stdout.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def jsonl_call(titan: str, name: str, args: list[str], stdin: bytes, count: int, parse) -> list | None:
    """One `--jsonl` call; `count` output lines, each through `parse`. None (and a FAIL) when it
    did not work."""
    p = run_titan(titan, args, stdin)
    if p.returncode != 0:
        cli_failure(name, p)
        return None
    lines = output_lines(p.stdout)
    if len(lines) != count:
        check(name, False, f"{count} lines in, {len(lines)} lines out")
        return None
    try:
        return [parse(line) for line in lines]
    except ValueError as error:
        check(name, False, f"an output line does not parse: {error}")
        return None


def encode_jsonl(titan: str, name: str, tokenizer: str, texts: list[str], flags: list[str],
                 ensure_ascii: bool = True) -> list[list[int]] | None:
    """One `encode --jsonl` call for all texts."""
    stdin = "".join(json.dumps(t, ensure_ascii=ensure_ascii) + "\n" for t in texts).encode()
    return jsonl_call(titan, name, ["encode", "--tokenizer", tokenizer, "--jsonl", *flags], stdin, len(texts),
                      parse_ids)


def encode_raw(titan: str, name: str, tokenizer: str, data: bytes, flags: list[str] = ()) -> list[int] | None:
    p = run_titan(titan, ["encode", "--tokenizer", tokenizer, *flags], data)
    if p.returncode != 0:
        cli_failure(name, p)
        return None
    try:
        return parse_ids(p.stdout)
    except ValueError as error:
        check(name, False, f"output is not ids: {error}")
        return None


def decode_raw(titan: str, name: str, tokenizer: str, ids: list[int]) -> bytes | None:
    p = run_titan(titan, ["decode", "--tokenizer", tokenizer], " ".join(map(str, ids)).encode())
    if p.returncode != 0:
        cli_failure(name, p)
        return None
    return p.stdout


def decode_jsonl(titan: str, name: str, tokenizer: str, id_lists: list[list[int]]) -> list[str] | None:
    stdin = "".join(" ".join(map(str, ids)) + "\n" for ids in id_lists).encode()
    return jsonl_call(titan, name, ["decode", "--tokenizer", tokenizer, "--jsonl"], stdin, len(id_lists), json.loads)


def compare_ids(name: str, texts: list[str], ours: list[list[int]] | None, refs: list[list[int]],
                token_bytes, labels: list[str] | None = None) -> None:
    """One check over all texts; the detail shows the first three that differ, at the first
    differing token, with the bytes of the tokens on both sides."""
    if ours is None:
        return  # the CLI call already failed
    def show(ids: list[int]) -> str:
        parts = []
        for t in ids:
            try:
                parts.append(f"{t}={token_bytes(t)!r}")
            except Exception:  # an id the reference does not know
                parts.append(f"{t}=?")
        return "[" + " ".join(parts) + "]"
    bad = [i for i, (o, r) in enumerate(zip(ours, refs)) if o != r]
    details = []
    for i in bad[:3]:
        o, r = ours[i], refs[i]
        k = next((j for j, (a, b) in enumerate(zip(o, r)) if a != b), min(len(o), len(r)))
        where = labels[i] if labels else f"text {i}"
        details.append(f"{where} {clip(texts[i])}: {len(o)} vs {len(r)} ids, first difference at "
                       f"id {k}: ours {show(o[k:k + 6])} ref {show(r[k:k + 6])}")
    check(f"{name} ({len(refs)} texts)" if len(refs) > 1 else name, not bad,
          f"{len(bad)} of {len(refs)} differ. " + " | ".join(details))


# ---- texts -----------------------------------------------------------------------------------

SCRIPTS = {  # (letters, punctuation) per script, for generated words
    "cjk": ([chr(c) for c in range(0x4E00, 0x9FA0, 7)], "。、「」"),
    "kana": ([chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)], "。ー"),
    "hangul": ([chr(c) for c in range(0xAC00, 0xD7A4, 13)], ".,"),
    "arabic": ([chr(c) for c in range(0x0621, 0x064B)], "،؟"),
    "hebrew": ([chr(c) for c in range(0x05D0, 0x05EB)], ".,"),
    "devanagari": ([chr(c) for c in range(0x0905, 0x093A)] + [chr(c) for c in range(0x093E, 0x094D)], "।"),
    "thai": ([chr(c) for c in range(0x0E01, 0x0E2F)] + [chr(c) for c in range(0x0E30, 0x0E3A)], " "),
    "cyrillic": ([chr(c) for c in range(0x0410, 0x0450)], ".,!?"),
    "greek": ([chr(c) for c in range(0x0391, 0x03CA) if c != 0x03A2], ".,;"),
}
PHRASES = ["日本語のテキストです。東京は晴れ。", "한국어 문장입니다. 안녕하세요!", "Привет, мир! Съешь же ещё этих мягких булок.",
           "Γειά σου Κόσμε; Ἀθῆναι", "مرحبا بالعالم، كيف حالك؟", "שלום עולם, מה שלומך?", "नमस्ते दुनिया। हिन्दी",
           "สวัสดีชาวโลก ภาษาไทย", "Tiếng Việt có dấu: Đây là một câu tiếng Việt.", "中文，简体字和繁體字。",
           "Ça va? Über straße, naïve café, Ærøskøbing, Łódź, İstanbul, ǅemal"]


def generated_multilingual(rng: random.Random, words: int) -> list[str]:
    out = []
    for script, (letters, punct) in SCRIPTS.items():
        parts = []
        for _ in range(words):
            parts.append("".join(rng.choice(letters) for _ in range(rng.randint(1, 8))))
            if rng.random() < 0.2:
                parts.append(rng.choice(punct))
        sep = "" if script in ("cjk", "kana") else " "
        out.append(sep.join(parts))
    return out


def varied_cases(rng: random.Random, shakespeare: str) -> list[str]:
    cases = ["", " ", "a", "hello world", "Hello, World!", "  leading", "trailing   ", "\n", "\r\n", "\t"]
    cases += PHRASES + generated_multilingual(rng, 40)
    # emoji: skin tones, ZWJ sequences, flags, keycaps, variation selectors
    cases += ["👍🏽 ok", "👩‍👩‍👧‍👦 family", "🏳️‍🌈🏴‍☠️", "🇯🇵🇺🇸🇩🇪", "❤️ ❤ ♥️", "1️⃣#️⃣", "👨🏿‍💻 coding", "😀" * 50,
              "text😀text 😀 😀😀 x"]
    # combining marks and text needing normalization (NFC/NFKC variants)
    cases += ["e\u0301", "caf\u0065\u0301 vs café", "a\u0308\u0323\u0301", "Z\u0336\u0351\u0327a\u0324l\u0301g\u0300o",
              "ﬁ ﬂ ﬃ office", "① ② ⑩", "ＡＢＣ ｄｅｆ １２３", "Å Å Å", "ｶﾀｶﾅ", "x² H₂O ½", "\u1e9b\u0323",
              "Ⅻ ⅻ", "한국어 \u1100\u1161\u11a8"]
    # whitespace
    for n in (1, 2, 3, 4, 7, 16, 100, 1000):
        cases += [" " * n, "a" + " " * n + "b", "\t" * n, "x" + "\n" * n + "y"]
    cases += ["\n\n  \t \r\n", " \n \n ", "\r\n" * 10, "x \t\n y", "\r\r\n", "a\rb", "\u00a0\u00a0x",
              "\u3000日本", "a\u0085b", "a\u2028b\u2029c", "a\u000bb\u000cc", "  \n\n  x  \n", "end \n"]
    # digits
    for n in range(1, 41):
        cases.append("".join(rng.choice("0123456789") for _ in range(n)))
    cases += ["1,234,567.89", "3.14159265358979", "v1.2.3-rc4", "2024-01-15T10:20:30Z", "１２３", "٣٤٥ ۶۷۸",
              "१२३४", "x1y22z333w4444", "0.000001e-10", "$1,000,000", "12a34b5678"]
    # contractions, both cases, with U+017F (long s) and U+212A (Kelvin sign)
    cases += ["I'M", "we'Ve", "DON'T", "it's", "they're", "you'LL", "she'd", "I'm here", "'s", "''s", "it’s",
              "'S'T'RE'VE'M'LL'D", "it'ſ it'ſt", "x'Kx 'K", "WE'RE HE'LL", "rock'n'roll", "'tis", "o'clock"]
    # long words
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    cases += ["".join(rng.choice(letters) for _ in range(5000)),
              "".join(rng.choice(letters + "0123456789") for _ in range(10000)),
              "ab" * 3000, "!" * 3000, "9" * 1000, " " * 5000 + "x", "é" * 2000, "日" * 2000]
    # special-token strings inside text, and near misses
    cases += [BOS, EOS + EOS, f"Hello{EOS}world", f"{BOS}<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
              "<|reserved_special_token_250|>", "<|reserved_special_token_251|>", "<|begin_of_text|", PAD,
              f" {PAD} x", f"a {EOS}  b", f"x {PAD}\n\ny", f"{BOS}a{BOS}", f"a{BOS}b", "<|eot_id|>",
              # non-ASCII whitespace and letters beside added tokens (lstrip/rstrip/single_word)
              f"\u00a0{PAD}\u00a0", f"x\u3000{EOS}\u2003y", f"é{PAD}é", f"日 {PAD} 本", f"_{PAD}", f"{PAD}9"]
    # URLs, code
    cases += ["https://example.com/path/to?q=1&r=two#frag", "mailto:someone@example.org",
              "def f(x):\n    return x**2  # square\n", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
              '{"key": [1, 2.5, null, "v"], "k2": {"n": true}}', '<html><body class="x">hi</body></html>',
              "SELECT * FROM t WHERE a='b';", "x=>x*2 && y||z !== w", "#include <stdio.h>\nint main(){}\n"]
    # NUL and control characters
    cases += ["\x00", "a\x00b", "\x01\x02\x1b[31mred\x1b[0m", "\x7f", "".join(chr(c) for c in range(32)),
              "\x80\x9f", "tab\there\x08back"]
    # lines of the corpus and random mixes
    lines = shakespeare.splitlines(keepends=True)
    cases += [lines[i] for i in range(0, len(lines), 997)]
    pool = (list(letters) + list(" \n\t'.,!?0123456789") + [" "] * 10
            + list("éüñß日本語한국어Ωπжд٣ـ😀👍🏽\u200d\u0301\u00a0\u3000ſK"))
    for _ in range(80):
        cases.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 200))))
    return cases


def sweep_code_points() -> list[int]:
    """Planes 0 and 1 and the tags/variation selectors in full, a sample of the rest."""
    points = [c for c in range(0x20000) if not 0xD800 <= c < 0xE000]
    points += list(range(0x20000, 0x40000, 8)) + list(range(0xE0000, 0xE0200))
    points += list(range(0x40000, 0x110000, 4099))
    return points


def sweep_texts(points: list[int], per_line: int = 48) -> tuple[list[str], list[str]]:
    """Each code point in contexts where \\p{L}, \\p{N}, \\s and the case-insensitive
    contractions change how its neighbours are split (digit runs, spaces, apostrophes).
    Both references use Unicode 16 properties (tiktoken 0.14's Rust regex and tokenizers 0.23's
    Oniguruma agree: U+10D40, a Unicode 16 digit, is \\p{N}; U+11DE0, a Unicode 17 one, is
    not), so the C++ tables must be Unicode 16 too; Python 3.11's unicodedata is only 14.0."""
    texts, labels = [], []
    for start in range(0, len(points), per_line):
        chunk = points[start:start + per_line]
        parts = []
        for cp in chunk:
            c = chr(cp)
            parts.append(f"{c}1234 a{c}b {c}{c}  {c}\n'{c}x 9{c}'s\t{c} ")
        texts.append("".join(parts))
        labels.append(f"U+{chunk[0]:04X}..U+{chunk[-1]:04X}")
    return texts, labels


# ---- HF reference ------------------------------------------------------------------------------

def byte_level_table() -> dict[int, str]:
    """The byte -> character table of byte-level BPE (GPT-2, tokenizers' ByteLevel): printable
    Latin-1 bytes stand for themselves, the 68 others take U+0100 upward in byte order."""
    table, extra = {}, 0
    for b in range(256):
        if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


CHAR_TO_BYTE = {ch: b for b, ch in byte_level_table().items()}


def torchtitan_config_tokens(config: dict) -> list:
    """The tokens torchtitan's HuggingFaceTokenizer adds from tokenizer_config.json, in its order:
    the standard keys, then added_tokens_decoder's contents (their listed ids are not used)."""
    out = []
    for key in ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"):
        value = config.get(key)
        if isinstance(value, dict):
            out.append(AddedToken(value["content"], single_word=value.get("single_word", False),
                                  lstrip=value.get("lstrip", False), rstrip=value.get("rstrip", False),
                                  normalized=value.get("normalized", True), special=value.get("special", True)))
        elif isinstance(value, str):
            out.append(AddedToken(value, special=True))
    for entry in config.get("added_tokens_decoder", {}).values():
        out.append(AddedToken(entry["content"], single_word=entry.get("single_word", False),
                              lstrip=entry.get("lstrip", False), rstrip=entry.get("rstrip", False),
                              normalized=entry.get("normalized", True), special=entry.get("special", True)))
    return out


class HfReference:
    """A tokenizer.json folder seen through HF tokenizers, with the rules of the module docstring."""

    def __init__(self, folder: str):
        path = os.path.join(folder, "tokenizer.json")
        self.as_text = Tokenizer.from_file(path)
        self.as_text.encode_special_tokens = True
        self.with_special = Tokenizer.from_file(path)
        config_path = os.path.join(folder, "tokenizer_config.json")
        self.config = json.load(open(config_path)) if os.path.exists(config_path) else None
        if self.config:  # torchtitan adds the config's tokens to the HF tokenizer
            for tok in (self.as_text, self.with_special):
                tok.add_special_tokens(torchtitan_config_tokens(self.config))
        self.added = {i: t.content for i, t in self.with_special.get_added_tokens_decoder().items()}
        self.bos_id = self._config_token_id("bos_token")
        self.eos_id = self._config_token_id("eos_token")
        # torchtitan decides once whether the HF pipeline adds BOS/EOS: by encoding "".
        empty = self.with_special.encode("").ids
        self.adds_bos = self.bos_id is not None and self.bos_id in empty
        self.adds_eos = self.eos_id is not None and self.eos_id in empty

    def _config_token_id(self, key: str) -> int | None:
        value = (self.config or {}).get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return self.with_special.token_to_id(value) if isinstance(value, str) else None

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.as_text.encode_batch(texts, add_special_tokens=False)]

    def encode_allow_special(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.with_special.encode_batch(texts, add_special_tokens=False)]

    def torchtitan_bos_eos(self, texts: list[str]) -> list[list[int]]:
        """torchtitan's HuggingFaceTokenizer.encode(s, add_bos=True, add_eos=True), restated:
        the ids of the whole HF pipeline (post-processor included), then the config's BOS in
        front unless the pipeline adds it already, the config's EOS at the end likewise.
        Special-token text stays text, as in a plain `titan tokenizer encode`."""
        out = []
        for e in self.as_text.encode_batch(texts, add_special_tokens=True):
            ids = list(e.ids)
            if self.bos_id is not None and not self.adds_bos:
                ids.insert(0, self.bos_id)
            if self.eos_id is not None and not self.adds_eos:
                ids.append(self.eos_id)
            out.append(ids)
        return out

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self.added:
            return self.added[token_id].encode()
        text = self.with_special.id_to_token(token_id)
        if all(ch in CHAR_TO_BYTE for ch in text):
            return bytes(CHAR_TO_BYTE[ch] for ch in text)
        return text.encode()  # not byte-level text: HF's ByteLevel decoder gives the text as it is

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.token_bytes(t) for t in ids)

    def decode(self, ids: list[int]) -> str:
        return self.with_special.decode(ids, skip_special_tokens=False)


def train_hf(corpus: list[str], pre_tokenizer, vocab_size: int = 1500) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[BOS, EOS, PAD], show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tok


def write_variant(base: str, folder: str, tok: Tokenizer, edit=None, config: dict | None = None) -> str:
    path = os.path.join(base, folder)
    os.makedirs(path, exist_ok=True)
    data = json.loads(tok.to_str())
    if edit:
        edit(data)
    text = json.dumps(data, ensure_ascii=False, indent=2)
    Tokenizer.from_str(text)  # the variant must stay loadable by HF
    with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)
    if config is not None:
        with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2)
    return path


def build_hf_variants(base: str, corpus: list[str]) -> dict[str, str]:
    """The tokenizer.json layouts under test, each in its own folder: name -> folder."""
    byte_level = train_hf(corpus, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    prefix_space = train_hf(corpus, pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True))
    llama3_split = train_hf(corpus, pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
    # Qwen2/Qwen3's layout: its own regex (single digits), then byte-level, NFC first.
    qwen_split = train_hf(corpus, pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))

    def post_processor_json(processor) -> dict:
        holder = Tokenizer(models.BPE())
        holder.post_processor = processor
        return json.loads(holder.to_str())["post_processor"]

    def ignore_merges(data):  # as in Meta's Llama 3 tokenizer.json
        data["model"]["ignore_merges"] = True

    def normalizer(kind):
        return lambda data: data.__setitem__("normalizer", {"type": kind})

    def template(data):
        ignore_merges(data)
        data["post_processor"] = post_processor_json(processors.TemplateProcessing(
            single=f"{BOS} $A", special_tokens=[(BOS, byte_level.token_to_id(BOS))]))

    def llama3_layout(data):  # Meta's: Sequence[ByteLevel, TemplateProcessing]
        ignore_merges(data)
        data["post_processor"] = post_processor_json(processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, byte_level.token_to_id(BOS))]),
        ]))

    def qwen_layout(data):  # Qwen3's tokenizer.json: NFC, no BOS, ByteLevel post-processor
        data["normalizer"] = {"type": "NFC"}
        data["post_processor"] = post_processor_json(processors.ByteLevel(trim_offsets=False))

    def single_word(data):
        for token in data["added_tokens"]:
            if token["content"] == PAD:
                token["single_word"] = True

    def contiguous_invert(data):  # spaces kept apart from everything else, runs joined
        data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": " "}, "behavior": "Contiguous", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}

    def strip_flags(data):
        for token in data["added_tokens"]:
            if token["content"] == PAD:
                token["lstrip"] = token["rstrip"] = True
            if token["content"] == EOS:
                token["rstrip"] = True

    def raw_keys(data):  # the shape of torchtitan's test tokenizer: keys that are not byte-level text
        vocab = {chr(b): b for b in range(128)}
        vocab.update({f"\\x{b:02x}": b for b in range(128, 256)})
        for word in (" t", "he", " the", ".\n", "in", " a", "\t", "  "):
            vocab.setdefault(word, len(vocab))
        for special in ("<|image|>", "<|pad|>"):
            vocab[special] = len(vocab)
        data["model"].update({"vocab": vocab, "merges": [], "unk_token": None})
        data["added_tokens"] = []
        data["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                  "use_regex": True}

    def decoder_entry(content):
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                "special": True}

    # BOS and EOS are absent from the vocabulary: bos_token/eos_token add them (as torchtitan does),
    # and added_tokens_decoder lists them again under ids far past the vocabulary.
    raw_keys_config = {"added_tokens_decoder": {"128000": decoder_entry(BOS), "128001": decoder_entry(EOS),
                                                "266": decoder_entry("<|image|>"), "267": decoder_entry("<|pad|>")},
                       "bos_token": BOS, "eos_token": EOS, "pad_token": "<|pad|>"}

    plain_config = {"bos_token": BOS, "eos_token": EOS}
    dict_config = {"bos_token": {"__type": "AddedToken", "content": BOS, "lstrip": False, "normalized": False,
                                 "rstrip": False, "single_word": False, "special": True},
                   "eos_token": EOS, "add_bos_token": True}
    return {
        "bytelevel": write_variant(base, "bytelevel", byte_level),
        "bytelevel_prefix_space": write_variant(base, "prefix", prefix_space),
        "llama3_split": write_variant(base, "split", llama3_split, ignore_merges),
        "nfc": write_variant(base, "nfc", byte_level, normalizer("NFC")),
        "nfkc": write_variant(base, "nfkc", byte_level, normalizer("NFKC")),
        "template_bos": write_variant(base, "template", llama3_split, template, plain_config),
        "config_add_bos": write_variant(base, "addbos", llama3_split, ignore_merges, dict_config),
        "llama3_layout": write_variant(base, "layout", llama3_split, llama3_layout, plain_config),
        "added_token_strip": write_variant(base, "strip", byte_level, strip_flags, plain_config),
        "added_token_single_word": write_variant(base, "single", byte_level, single_word, plain_config),
        "split_contiguous_invert": write_variant(base, "contiguous", byte_level, contiguous_invert),
        "raw_keys": write_variant(base, "raw", byte_level, raw_keys, raw_keys_config),
        "qwen_layout": write_variant(base, "qwen", qwen_split, qwen_layout, {"eos_token": EOS}),
    }


# ---- reference self-checks (also run with --selfcheck) -------------------------------------------

def check_references(enc, hf: dict[str, HfReference], cases: list[str], rng: random.Random) -> None:
    specials = llama3_special_tokens()
    check("ref: 256 Llama 3 special tokens, ids 128000-128255",
          len(specials) == 256 and sorted(specials.values()) == list(range(128000, 128256))
          and specials["<|eot_id|>"] == 128009 and specials["<|reserved_special_token_250|>"] == 128255)
    check("ref: tiktoken vocabulary is 128,256", enc.n_vocab == 128256, str(enc.n_vocab))
    round_trip = [i for i, s in enumerate(cases) if enc.decode(enc.encode_ordinary(s)) != s]
    check("ref: tiktoken round trip", not round_trip, f"texts {round_trip[:5]}")
    table = byte_level_table()
    check("ref: byte-level table matches ByteLevel.alphabet()",
          sorted(table.values()) == sorted(pre_tokenizers.ByteLevel.alphabet()))
    probe = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    sample = "".join(chr(c) for c in range(0x7F)) + "é€😀\u00a0\u00ad"
    mapped = "".join(piece for piece, _ in probe.pre_tokenize_str(sample))
    check("ref: byte-level table matches ByteLevel on sample bytes",
          mapped == "".join(table[b] for b in sample.encode()))
    for name, ref in hf.items():
        bad = []
        for _ in range(10):
            ids = [rng.randrange(ref.with_special.get_vocab_size()) for _ in range(rng.randint(1, 60))]
            if ref.decode_bytes(ids).decode("utf-8", "replace") != ref.decode(ids):
                bad.append(ids)
        check(f"ref {name}: HF decode == byte reference with U+FFFD", not bad, clip(bad[:1]))
    expect_bos = {"template_bos": True, "llama3_layout": True}
    check("ref: post-processor BOS seen only where a template adds it",
          all(ref.adds_bos == expect_bos.get(name, False) and not ref.adds_eos for name, ref in hf.items()),
          str({n: (r.adds_bos, r.adds_eos) for n, r in hf.items()}))
    check("ref: config bos/eos resolved (string and dict forms)",
          all(hf[n].bos_id == 0 and hf[n].eos_id == 1 for n in ("template_bos", "config_add_bos", "llama3_layout")))
    nfkc = hf["nfkc"].encode(["ﬁ①ＡＢＣ"])[0]
    check("ref: NFKC variant normalizes", nfkc == hf["nfkc"].encode(["fi1ABC"])[0], str(nfkc))
    text_mode = hf["bytelevel"].encode([f"a{BOS}b"])[0]
    special_mode = hf["bytelevel"].encode_allow_special([f"a{BOS}b"])[0]
    check("ref: encode_special_tokens keeps special text as text",
          0 not in text_mode and 0 in special_mode, f"{text_mode} {special_mode}")


# ---- the checks against the CLI -------------------------------------------------------------------

def test_llama3(titan: str, folder: str, enc, cases: list[str], sweep: list[str], sweep_labels: list[str],
                shakespeare: bytes, rng: random.Random) -> None:
    token_bytes = enc.decode_single_token_bytes
    ours = encode_jsonl(titan, "llama3: encode cases", folder, cases, [])
    compare_ids("llama3: encode cases", cases, ours, enc.encode_ordinary_batch(cases), token_bytes)
    ours = encode_jsonl(titan, "llama3: encode --allow-special", folder, cases, ["--allow-special"])
    compare_ids("llama3: encode --allow-special", cases, ours,
                [enc.encode(s, allowed_special="all") for s in cases], token_bytes)

    started = time.time()
    ours = encode_raw(titan, "llama3: tinyshakespeare as one text", folder, shakespeare)
    if ours is not None:
        ref = enc.encode_ordinary(shakespeare.decode("utf-8"))
        compare_ids("llama3: tinyshakespeare as one text", ["tinyshakespeare"], [ours], [ref], token_bytes)
    print(f"  (tinyshakespeare: {time.time() - started:.1f}s)")

    started = time.time()
    ours = encode_jsonl(titan, "llama3: Unicode sweep", folder, sweep, [], ensure_ascii=False)
    compare_ids("llama3: Unicode sweep", sweep, ours, enc.encode_ordinary_batch(sweep), token_bytes, sweep_labels)
    print(f"  (sweep: {time.time() - started:.1f}s)")

    refs = enc.encode_ordinary_batch(cases)
    decoded = decode_jsonl(titan, "llama3: decode --jsonl", folder, refs)
    if decoded is not None:
        bad = [i for i, s in enumerate(cases) if decoded[i] != s]
        check(f"llama3: decode --jsonl gives the text back ({len(cases)} texts)", not bad,
              " | ".join(f"text {i} {clip(cases[i])} -> {clip(decoded[i])}" for i in bad[:3]))
    ids = [rng.randrange(128256) for _ in range(3000)]
    out = decode_raw(titan, "llama3: decode random ids", folder, ids)
    if out is not None:
        ref = enc.decode_bytes(ids)
        k = next((j for j, (a, b) in enumerate(zip(out, ref)) if a != b), min(len(out), len(ref)))
        check("llama3: decode random ids (specials included) byte for byte", out == ref,
              f"{len(out)} vs {len(ref)} bytes, first difference at byte {k}: "
              f"ours {out[k:k + 24]!r} ref {ref[k:k + 24]!r}")

    rank_file = os.path.join(folder, "tokenizer.model")
    some = cases[:60]
    ours = encode_jsonl(titan, "llama3: encode --bos --eos (file path)", rank_file, some, ["--bos", "--eos"])
    compare_ids("llama3: encode --bos --eos (file path)", some, ours,
                [[LLAMA3_BOS_ID] + ids + [LLAMA3_EOS_ID] for ids in enc.encode_ordinary_batch(some)], token_bytes)

    raw = b"ab\xff\xfe cd \xe2\x82 e\xc3 \xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf" + "ok 😀".encode() + b"\x80"
    ids = encode_raw(titan, "llama3: invalid UTF-8 encodes", folder, raw)
    if ids is not None:
        check("llama3: invalid UTF-8 gives ordinary ids", all(0 <= t < 128000 for t in ids), str(ids))
        back = decode_raw(titan, "llama3: invalid UTF-8 round trip", folder, ids)
        if back is not None:
            check("llama3: invalid UTF-8 bytes round trip exactly", back == raw, f"{back!r} vs {raw!r}")


def test_hf_variant(titan: str, name: str, folder: str, ref: HfReference, cases: list[str],
                    sweep: list[str] | None, sweep_labels: list[str] | None, rng: random.Random,
                    shakespeare: bytes | None = None) -> None:
    texts = cases + (sweep or [])
    ours = encode_jsonl(titan, f"{name}: encode", folder, texts, [])
    if ours is not None:
        refs = ref.encode(texts)
        compare_ids(f"{name}: encode cases", cases, ours[:len(cases)], refs[:len(cases)], ref.token_bytes)
        if sweep:
            compare_ids(f"{name}: Unicode sweep", sweep, ours[len(cases):], refs[len(cases):], ref.token_bytes,
                        sweep_labels)
    ours = encode_jsonl(titan, f"{name}: encode --allow-special", folder, cases, ["--allow-special"])
    compare_ids(f"{name}: encode --allow-special", cases, ours, ref.encode_allow_special(cases), ref.token_bytes)
    if ref.config is not None:
        some = cases[:60]
        ours = encode_jsonl(titan, f"{name}: encode --bos --eos", folder, some, ["--bos", "--eos"])
        compare_ids(f"{name}: encode --bos --eos (torchtitan rule)", some, ours, ref.torchtitan_bos_eos(some),
                    ref.token_bytes)
    if shakespeare is not None:
        ours = encode_raw(titan, f"{name}: tinyshakespeare as one text", folder, shakespeare)
        if ours is not None:
            compare_ids(f"{name}: tinyshakespeare as one text", ["tinyshakespeare"], [ours],
                        ref.encode([shakespeare.decode("utf-8")]), ref.token_bytes)

    refs = ref.encode_allow_special(cases)
    decoded = decode_jsonl(titan, f"{name}: decode --jsonl", folder, refs)
    if decoded is not None:
        expected = [ref.decode(ids) for ids in refs]
        bad = [i for i in range(len(cases)) if decoded[i] != expected[i]]
        check(f"{name}: decode --jsonl == HF decode ({len(cases)} texts)", not bad,
              " | ".join(f"text {i} ids {clip(refs[i])}: ours {clip(decoded[i])} HF {clip(expected[i])}"
                         for i in bad[:3]))
    ids = [rng.randrange(ref.with_special.get_vocab_size()) for _ in range(2000)]
    out = decode_raw(titan, f"{name}: decode random ids", folder, ids)
    if out is not None:
        expected = ref.decode_bytes(ids)
        k = next((j for j, (a, b) in enumerate(zip(out, expected)) if a != b), min(len(out), len(expected)))
        check(f"{name}: decode random ids byte for byte", out == expected,
              f"{len(out)} vs {len(expected)} bytes, first difference at byte {k}: "
              f"ours {out[k:k + 24]!r} ref {expected[k:k + 24]!r}")


def test_invalid_utf8_hf(titan: str, folder: str) -> None:
    raw = b"ab\xff\xfe cd \xe2\x82 e\xc3 \xf0\x9f\x98 \xc0\xaf\x80"
    ids = encode_raw(titan, "bytelevel: invalid UTF-8 encodes", folder, raw)
    if ids is not None:
        back = decode_raw(titan, "bytelevel: invalid UTF-8 round trip", folder, ids)
        if back is not None:
            check("bytelevel: invalid UTF-8 bytes round trip exactly", back == raw, f"{back!r} vs {raw!r}")


def test_our_trainer(titan: str, tmp: str, corpus_path: str, cases: list[str], sweep: list[str],
                     sweep_labels: list[str], rng: random.Random) -> None:
    out_dir = os.path.join(tmp, "ours")
    started = time.time()
    p = subprocess.run([titan, "tokenizer", "train", "--vocab-size", "1000", "--output", out_dir, corpus_path],
                       cwd=ROOT, env=ENV, capture_output=True, timeout=CLI_TIMEOUT_S)
    print(f"  (train: {time.time() - started:.1f}s)")
    if not check("train: exits 0 and writes tokenizer.json, tokenizer_config.json",
                 p.returncode == 0 and os.path.exists(os.path.join(out_dir, "tokenizer.json"))
                 and os.path.exists(os.path.join(out_dir, "tokenizer_config.json")),
                 f"rc={p.returncode} stderr={p.stderr[-600:].decode('utf-8', 'replace')!r}"):
        return
    try:
        ref = HfReference(out_dir)
    except Exception as error:  # HF refuses the file: the main finding
        check("train: HF tokenizers loads the result", False, f"{type(error).__name__}: {error}")
        return
    check("train: HF tokenizers loads the result", True)
    vocab = ref.with_special.get_vocab_size()
    check("train: vocabulary size <= 1000", vocab <= 1000, str(vocab))
    check("train: special tokens present",
          ref.with_special.token_to_id(BOS) is not None and ref.with_special.token_to_id(EOS) is not None
          and ref.with_special.token_to_id(BOS) in ref.added and ref.with_special.token_to_id(EOS) in ref.added,
          str(ref.added))
    check("train: tokenizer_config.json names bos_token and eos_token",
          isinstance(ref.config, dict) and ref.bos_id == ref.with_special.token_to_id(BOS) is not None
          and ref.eos_id == ref.with_special.token_to_id(EOS) is not None, clip(ref.config))
    # The file must declare the Llama 3 split then ByteLevel: HF's pre-tokenizer must cut text as
    # the pattern does (the `regex` module stands in for the pattern here).
    pattern = regex.compile(LLAMA3_PATTERN)
    table = byte_level_table()
    probe = [s for s in cases if len(s) < 500][:150]
    bad = []
    for s in probe:
        expected = ["".join(table[b] for b in piece.encode()) for piece in pattern.findall(s)]
        got = [piece for piece, _ in ref.as_text.pre_tokenizer.pre_tokenize_str(s)] if ref.as_text.pre_tokenizer else []
        if got != expected:
            bad.append(f"{clip(s)}: {clip(got)} vs {clip(expected)}")
    check("train: tokenizer.json pre-tokenizes with the Llama 3 pattern and ByteLevel", not bad, " | ".join(bad[:2]))
    test_hf_variant(titan, "ours", out_dir, ref, cases, sweep, sweep_labels, rng)
    decoded = None
    ids = encode_jsonl(titan, "ours: round trip encode", out_dir, cases, [])
    if ids is not None:
        decoded = decode_jsonl(titan, "ours: round trip decode", out_dir, ids)
    if decoded is not None:
        bad = [i for i, s in enumerate(cases) if decoded[i] != s]
        check("ours: decode(encode(text)) == text", not bad,
              " | ".join(f"{clip(cases[i])} -> {clip(decoded[i])}" for i in bad[:3]))


def expect_load_error(titan: str, name: str, tokenizer: str, *needles: str) -> None:
    p = run_titan(titan, ["encode", "--tokenizer", tokenizer], b"hello world")
    err = p.stderr.decode("utf-8", "replace")
    ok = (p.returncode == 2 and err.startswith("titan: error:") and err.count("titan: error") == 1
          and all(n in err for n in needles))
    check(name, ok, f"rc={p.returncode} stderr={err[-600:]!r} (wanted {needles})")


def test_malformed(titan: str, tmp: str, rank_file: str, good_json: str) -> None:
    folder = os.path.join(tmp, "bad_base64")
    os.makedirs(folder)
    with open(rank_file, "rb") as f:
        lines = f.read().split(b"\n")
    lines[999] = b"!!not*base64== " + lines[999].split(b" ")[-1]
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(b"\n".join(lines))
    expect_load_error(titan, "malformed: bad base64 line in tokenizer.model", folder, "tokenizer.model")

    with open(good_json, encoding="utf-8") as f:
        text = f.read()
    folder = os.path.join(tmp, "truncated")
    os.makedirs(folder)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text[:len(text) // 2])
    expect_load_error(titan, "malformed: truncated tokenizer.json", folder, "tokenizer.json")

    folder = os.path.join(tmp, "unigram")
    os.makedirs(folder)
    data = json.loads(text)
    data["model"] = {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["a", -1.0], ["b", -2.0]]}
    unigram = json.dumps(data)
    Tokenizer.from_str(unigram)  # a valid file HF loads: refused as unsupported, not as broken
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(unigram)
    expect_load_error(titan, "unsupported: Unigram model type", folder, "tokenizer.json", "Unigram")

    folder = os.path.join(tmp, "no_tokenizer_files_here")
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write("{}\n")
    expect_load_error(titan, "folder without tokenizer files", folder, "no_tokenizer_files_here")
    expect_load_error(titan, "path that does not exist", os.path.join(tmp, "nowhere"), "nowhere")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", help="the titan binary (not needed with --selfcheck)")
    ap.add_argument("--assets", default=os.path.join(ROOT, "tests", "assets"))
    ap.add_argument("--selfcheck", action="store_true", help="build and check the references only")
    opts = ap.parse_args()
    if not opts.selfcheck and not opts.titan:
        ap.error("--titan is required (or --selfcheck)")
    llama3_dir = os.path.join(opts.assets, "llama3")
    rank_file = os.path.join(llama3_dir, "tokenizer.model")
    corpus_path = os.path.join(opts.assets, "tinyshakespeare", "input.txt")
    for path in (rank_file, corpus_path):
        if not os.path.exists(path):
            print(f"SKIPPED: {path} is absent")
            return 77
    titan = os.path.abspath(opts.titan) if opts.titan else None
    print(f"tiktoken {tiktoken.__version__}, tokenizers {__import__('tokenizers').__version__}")

    started = time.time()
    rng = random.Random(20240601)
    with open(corpus_path, "rb") as f:
        shakespeare = f.read()
    shakespeare_text = shakespeare.decode("utf-8")
    cases = varied_cases(rng, shakespeare_text)
    points = sweep_code_points()
    sweep, sweep_labels = sweep_texts(points)
    enc = tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN,
                            mergeable_ranks=tiktoken.load.load_tiktoken_bpe(rank_file),
                            special_tokens=llama3_special_tokens())
    tmp = tempfile.mkdtemp(prefix="titan_tokenizer_")
    try:
        corpus = [shakespeare_text[i:i + 20000] for i in range(0, len(shakespeare_text), 20000)]
        corpus += PHRASES * 20 + generated_multilingual(random.Random(7), 3000)
        variants = build_hf_variants(os.path.join(tmp, "hf"), corpus)
        hf = {name: HfReference(folder) for name, folder in variants.items()}
        print(f"references: {len(cases)} cases ({sum(map(len, cases)):,} chars), sweep {len(points):,} code points "
              f"in {len(sweep)} texts ({sum(map(len, sweep)):,} chars), {len(hf)} HF variants; "
              f"{time.time() - started:.1f}s")
        check_references(enc, hf, cases, rng)
        if opts.selfcheck:
            t0 = time.time()
            n = sum(map(len, enc.encode_ordinary_batch(sweep)))
            print(f"  tiktoken sweep: {n:,} ids in {time.time() - t0:.1f}s")
            for name in ("bytelevel", "llama3_split"):
                t0 = time.time()
                n = sum(map(len, hf[name].encode(cases + sweep)))
                print(f"  {name} cases+sweep: {n:,} ids in {time.time() - t0:.1f}s")
        else:
            test_llama3(titan, llama3_dir, enc, cases, sweep, sweep_labels, shakespeare, rng)
            for name, folder in variants.items():
                with_sweep = name in ("bytelevel", "llama3_split")
                target = os.path.join(folder, "tokenizer.json") if name == "bytelevel" else folder
                test_hf_variant(titan, name, target, hf[name], cases, sweep if with_sweep else None,
                                sweep_labels if with_sweep else None, rng,
                                shakespeare if name == "llama3_layout" else None)
            test_invalid_utf8_hf(titan, variants["bytelevel"])
            test_our_trainer(titan, tmp, corpus_path, cases, sweep, sweep_labels, rng)
            test_malformed(titan, tmp, rank_file, os.path.join(variants["bytelevel"], "tokenizer.json"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.time() - started:.1f}s")

    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
