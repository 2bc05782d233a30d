#!/usr/bin/env python3
"""Makes llama_tokenizer_fixture.json: token ids of SmolLM2-135M-Instruct's
tokenizer, computed by Hugging Face `tokenizers` / `transformers`, for
tests/examples/test_llama_tokenizer.cpp.

The tokenizer is built by transformers from the GGUF file itself
(AutoTokenizer.from_pretrained(dir, gguf_file=name): vocabulary, merges and
control tokens from tokenizer.ggml.*). transformers does not know the
pre-tokenizer name "smollm", so it gives the file a plain GPT-2 ByteLevel
pre-tokenizer; SmolLM2's own tokenizer.json (and llama.cpp, whose
llama-vocab.cpp maps "smollm" to the regexes \\p{N} then GPT-2's) first splits
every digit off: Sequence[Digits(individual_digits=True),
ByteLevel(add_prefix_space=False, use_regex=True)]. The reference ids here use
that pre-tokenizer on transformers' vocabulary; each case also records whether
transformers' unmodified GGUF tokenizer gives the same ids
("transformers_gguf_same"), so the difference, if any, is visible.

Needs: transformers tokenizers gguf numpy torch (transformers' GGUF reader
imports torch), and Debian's bible-kjv for the KJV lines. Run:

  python3 tests/examples/data/make_llama_tokenizer_fixture.py [model.gguf]

(default: $LQER_SMOLLM2_GGUF, else ~/.cache/lqer/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
"""

import importlib.metadata
import json
import os
import subprocess
import sys

import gguf
from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "llama_tokenizer_fixture.json")


def model_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.environ.get("LQER_SMOLLM2_GGUF"):
        return os.environ["LQER_SMOLLM2_GGUF"]
    cache = os.environ.get("LQER_CACHE") or os.path.expanduser("~/.cache/lqer")
    return os.path.join(cache, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def gguf_metadata(path):
    """What the gguf package reads from the tokenizer keys (the C++ test compares)."""
    r = gguf.GGUFReader(path)

    def scalar(key):
        f = r.fields.get(key)
        if f is None:
            return None
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode("utf-8")
        v = f.parts[f.data[0]][0]
        return bool(v) if f.types[0] == gguf.GGUFValueType.BOOL else int(v)

    def count(key):
        return len(r.fields[key].data)

    types = r.fields["tokenizer.ggml.token_type"]
    tokens = r.fields["tokenizer.ggml.tokens"]
    control = [i for i, d in enumerate(types.data) if int(types.parts[d][0]) == 3]
    return {
        "model": scalar("tokenizer.ggml.model"),
        "pre": scalar("tokenizer.ggml.pre"),
        "tokens": count("tokenizer.ggml.tokens"),
        "merges": count("tokenizer.ggml.merges"),
        "token_types": count("tokenizer.ggml.token_type"),
        "bos_token_id": scalar("tokenizer.ggml.bos_token_id"),
        "eos_token_id": scalar("tokenizer.ggml.eos_token_id"),
        "unknown_token_id": scalar("tokenizer.ggml.unknown_token_id"),
        "padding_token_id": scalar("tokenizer.ggml.padding_token_id"),
        "add_bos_token": scalar("tokenizer.ggml.add_bos_token"),
        "add_eos_token": scalar("tokenizer.ggml.add_eos_token"),
        "control_tokens": {str(i): bytes(tokens.parts[tokens.data[i]]).decode("utf-8") for i in control},
    }


def kjv_lines():
    """60 lines of `bible -l1000` output across the whole Bible, as printed:
    chapter headings, empty lines and "  <n> <verse>" lines (numbers and
    leading spaces included), and one whole chapter as a single text."""
    out = subprocess.run(["bible", "-l1000", "-p", "/usr/lib", "Gen1:1-Rev22:21"], check=True,
                         capture_output=True, text=True).stdout
    lines = out.split("\n")
    step = len(lines) // 60
    picked = [lines[i * step + 7] for i in range(60)]
    chapter = subprocess.run(["bible", "-l1000", "-p", "/usr/lib", "Psa119:1-176"], check=True,
                             capture_output=True, text=True).stdout
    return picked, chapter


EDGE = [
    ("empty", ""),
    ("one space", " "),
    ("spaces run", "a     b"),
    ("leading and trailing spaces", "   lead and trail   "),
    ("only spaces", "        "),
    ("newlines", "line one\nline two\n\n\nline five\n"),
    ("only newlines", "\n\n\n"),
    ("spaces and newlines", "a \n b  \n\n  c   \n"),
    ("crlf", "Windows\r\nline\r\n"),
    ("tabs", "col1\tcol2\t\tcol3\t"),
    ("tab space mix", "\t \t  x \t"),
    ("vertical tab, form feed", "a\x0bb\x0cc"),
    ("info separators", "a\x1cb\x1fc"),
    ("nul and controls", "a\x00b\x07c\x7fd"),
    ("digits", "0 1 2 3 4 5 6 7 8 9"),
    ("long number", "31415926535897932384626433832795028841971"),
    ("numbers in text", "In 1611, 12 men and 3,000 women paid $4.99 (or 10%) on 2024-06-30 at 23:59."),
    ("number words", "abc123def 456ghi 7.8e-9"),
    ("unicode digits", "\u0661\u0662\u0663 \u0966\u0967 \u00bd \u2162 \u2460"),
    ("punctuation", "Hello, world! What?! ... (a) [b] {c} <d> \"e\" 'f' -- g; h: i/j\\k|l"),
    ("punctuation run", "!!!???...,,,;;;:::---___***"),
    ("symbols", "@#$%^&*+=~`"),
    ("contractions", "it's don't we're you've I'm we'll he'd"),
    ("contractions upper", "IT'S DON'T WE'RE YOU'VE I'M WE'LL HE'D"),
    ("contractions odd", "'s 't 're 've 'm 'll 'd ''s 'x '' ' s"),
    ("apostrophes", "the king's men; the kings' horses; rock 'n' roll"),
    ("accents", "café naïve résumé Zürich São Paulo Ångström"),
    ("combining marks", "cafe\u0301 nai\u0308ve n\u0303 a\u0301\u0302\u0303"),
    ("greek and cyrillic", "Ἐν ἀρχῇ ἦν ὁ λόγος. В начале было Слово."),
    ("hebrew and arabic", "בְּרֵאשִׁית בָּרָא אֱלֹהִים في البدء"),
    ("cjk", "太初有道，道與神同在。 日本語のテキスト 한국어 텍스트"),
    ("emoji", "Hi 👋🏽 family 👨‍👩‍👧 flag 🇬🇧 ❤️ done"),
    ("unicode spaces", "a\u00a0b\u2003c\u3000d\u2028e\u200bf\u202fg\u0085h"),
    ("math and arrows", "∀x ∈ ℝ: x² ≥ 0 → √x ∞ ≈ ≠"),
    ("fullwidth", "ＡＢＣ１２３！"),
    ("special tokens", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"),
    ("special tokens adjacent", "<|endoftext|><|endoftext|>x<|im_end|> <|im_start|>"),
    ("special tokens inside words", "abc<|im_end|>def <repo_name>x<file_sep>y<empty_output>"),
    ("special token broken", "<|im_start| <|im_end <im_start|> < |im_end|>"),
    ("code", "def f(x):\n    return x ** 2  # square\n\nif __name__ == '__main__':\n\tprint(f(3))\n"),
    ("url and email", "https://example.com/a?b=c&d=e#f user.name+tag@mail.example.org"),
    ("long word", "Pneumonoultramicroscopicsilicovolcanoconiosis " * 3),
    ("repeated chars", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("replacement char", "a\ufffdb"),
    # Bytes SmolLM2's vocabulary has no token for (04 06 13 14 16 1D, and F1 / F2,
    # the lead bytes of planes 4–11): HF's BPE drops them.
    ("bytes without a token", "a\x04b\x06c\x13d\x14\x16\x1de x\U00040000y \U000a0000 --\x04--"),
]

# Invalid UTF-8 (bytes): HF takes a Python str, so these are decoded with
# errors="replace" (one U+FFFD per maximal ill-formed subpart) first.
INVALID = [
    ("invalid: lone continuation", b"a\x80b"),
    ("invalid: truncated 3-byte", b"a\xe2\x82 b"),
    ("invalid: overlong", b"\xc0\xafx"),
    ("invalid: surrogate", b"\xed\xa0\x80y"),
    ("invalid: beyond U+10FFFF", b"\xf4\x90\x80\x80z"),
    ("invalid: truncated at end", b"end\xf0\x9f\x98"),
    ("invalid: ff fe", b"\xff\xfe text"),
]


def main():
    path = model_path()
    meta = gguf_metadata(path)
    hf = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    ref = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    plain = Tokenizer.from_str(ref.to_str())
    plain.encode_special_tokens = True  # HF's split_special_tokens=True

    cases = []
    picked, chapter = kjv_lines()
    texts = [(f"kjv {i}", t.encode("utf-8")) for i, t in enumerate(picked)]
    texts.append(("kjv chapter Psalm 119", chapter.encode("utf-8")))
    texts += [(n, t.encode("utf-8")) for n, t in EDGE]
    texts += INVALID
    differ = 0
    for name, raw in texts:
        text = raw.decode("utf-8", errors="replace")
        ids = ref.encode(text, add_special_tokens=True).ids
        no_special = ref.encode(text, add_special_tokens=False).ids
        hf_ids = hf(text)["input_ids"]
        case = {"name": name}
        try:
            case["text"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            case["text_hex"] = raw.hex()
        case["ids"] = ids
        case["bos"] = len(ids) == len(no_special) + 1 and ids[0] == meta["bos_token_id"]
        case["transformers_gguf_same"] = hf_ids == ids
        differ += hf_ids != ids
        split = plain.encode(text, add_special_tokens=False).ids
        if split != no_special:
            case["ids_split_special"] = split
        case["decodes_to_text"] = ref.decode(ids, skip_special_tokens=False) == text
        cases.append(case)

    fixture = {
        "comment": "Made by make_llama_tokenizer_fixture.py from " + os.path.basename(path) +
                   " with " + ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("transformers", "tokenizers", "gguf")) +
                   " (see the script)",
        "gguf": meta,
        "cases": cases,
    }
    # One case per line: readable, and diffs show which case changed.
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("{\n")
        f.write(f' "comment": {json.dumps(fixture["comment"])},\n')
        f.write(f' "gguf": {json.dumps(meta, ensure_ascii=False)},\n')
        f.write(' "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n ]\n}\n")
    print(f"{OUT}: {len(cases)} cases; transformers' own GGUF tokenizer differs on {differ}")


if __name__ == "__main__":
    main()
