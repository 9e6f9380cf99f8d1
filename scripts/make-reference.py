#!/usr/bin/env python3
"""Reference fixtures from llama.cpp (through a pinned llama-cpp-python) for the engine's correctness tests.

For one GGUF it writes a JSON file with:
  - "tokenize": token ids of ~100 varied strings (special tokens parsed, no BOS added),
  - "generate": for ~10 prompts, the prompt's token ids, the greedy 32-token continuation, and the top-5
    log-probabilities (log-softmax of the raw logits) at every generated position.

An optional third argument, `q8_0`, runs llama.cpp with a q8_0 KV cache (`-ctk q8_0 -ctv q8_0`).
The tests compare against these files; llama.cpp is not needed at test time. Regenerate with
    scripts/make-reference.sh        (installs llama-cpp-python==0.3.36 into a venv outside the repo)
"""
import json
import sys

import numpy as np
from llama_cpp import Llama

GENERATED_TOKENS = 32
TOP_N = 5

STRINGS = [
    "Hello world",
    "Hello, world!",
    " Hello world",
    "  leading spaces",
    "trailing spaces   ",
    "multiple   inner    spaces",
    "\n",
    "\n\n\n",
    "line one\nline two\r\nline three",
    "\ttab\tseparated\tvalues",
    "mixed \t \n whitespace \n\n\t end",
    "don't can't won't I'll you're they've she'd",
    "DON'T CAN'T I'LL YOU'RE",
    "The quick brown fox jumps over the lazy dog.",
    "1234567890",
    "3.14159265358979",
    "Call 555-0100 or +44 20 7946 0958",
    "2026-11-25T12:00:00Z",
    "$1,000,000.00 and 50% off",
    "café naïve résumé façade",
    "Ünïcödé with diacritics: àéîõü ÀÉÎÕÜ",
    "Straße groß",
    "日本語のテキスト",
    "中文文本测试",
    "한국어 텍스트",
    "Русский текст",
    "Ελληνικά",
    "العربية نص",
    "עברית",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "emoji 😀😃😄",
    "👍🏽 thumbs up with skin tone",
    "family 👨‍👩‍👧‍👦 zwj sequence",
    "flags 🇫🇷🇯🇵🇺🇸",
    "math ∑∫∂√∞≈≠≤≥",
    "arrows ←↑→↓↔",
    "box ┌─┐│└┘",
    "def main():\n    print('hello')\n",
    "fn main() {\n    println!(\"hi\");\n}",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "SELECT * FROM users WHERE id = 42;",
    "<html><body><p>Hi</p></body></html>",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
    "https://example.com/path?query=1&other=two#frag",
    "user@example.com",
    "C:\\Windows\\System32",
    "/usr/local/bin/model --help",
    "snake_case_identifier camelCaseIdentifier PascalCase kebab-case",
    "ALL CAPS SENTENCE HERE",
    "a",
    " ",
    "  ",
    ".",
    "...",
    "!!!???",
    "--- *** ___",
    "«quoted» “curly” ‘single’",
    "em—dash en–dash",
    "non\u00a0breaking\u00a0space",
    "zero\u200bwidth",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    "<bos>raw bos marker",
    "<eos>",
    "word" * 20,
    "ab" * 50,
    " the" * 30,
    "0" * 40,
    "\n" * 10 + "after newlines",
    " " * 16 + "indented",
    "Supercalifragilisticexpialidocious",
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "antidisestablishmentarianism",
    "x = y + z * (a - b) / c ** 2",
    "if a >= b && c != d || !e { return; }",
    "#include <stdio.h>",
    "// comment\n/* block */",
    "# Markdown Title\n\n- item one\n- item two\n\n**bold** _italic_ `code`",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "Q: What is 2+2?\nA: 4",
    "The year 1999 and the year 2000.",
    "I have 3 apples, 12 oranges and 150 grapes.",
    "Version 1.2.3-beta+build.45",
    "0x1F 0b1010 0o777 1e-10",
    "camelCase123Numbers456",
    "tabs\tand\nnewlines\tmixed\n",
    "End with newline\n",
    "🙂",
    "中",
    "é",
    "a\u0301 combining accent",
    "Ａｌｌ ｆｕｌｌｗｉｄｔｈ",
    "mixed English and 中文 and العربية and emoji 🎉",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
]

PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "The three primary colors are",
    "1, 2, 3, 4, 5,",
    "Water boils at a temperature of",
    "In machine learning, a neural network is",
    "Translate to French: Good morning ->",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
]


def log_softmax(row):
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


def main(model_path, out_path, kv_type="f16"):
    # `q8_0`: llama.cpp's `-ctk q8_0 -ctv q8_0` (a quantized V cache needs its flash attention).
    kv = {"type_k": 8, "type_v": 8, "flash_attn": True} if kv_type == "q8_0" else {}
    llm = Llama(model_path=model_path, n_ctx=512, n_threads=2, logits_all=True, seed=0, verbose=False, **kv)
    tokenize = [{"text": s, "ids": llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)} for s in STRINGS]
    add_bos = llm._model.add_bos_token() if hasattr(llm._model, "add_bos_token") else True
    generate = []
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
        llm.reset()
        llm.eval(ids)
        out, tops = [], []
        for _ in range(GENERATED_TOKENS):
            lp = log_softmax(llm.scores[llm.n_tokens - 1])
            best = np.argsort(-lp)[:TOP_N]
            tops.append([[int(i), float(lp[i])] for i in best])
            nxt = int(best[0])
            out.append(nxt)
            llm.eval([nxt])
        generate.append({"prompt": prompt, "prompt_ids": ids, "greedy_ids": out, "top_logprobs": tops})
    with open(out_path, "w") as f:
        json.dump({"model": model_path.rsplit("/", 1)[-1], "llama_cpp_python": "0.3.36", "kv_type": kv_type,
                   "add_bos": bool(add_bos), "tokenize": tokenize, "generate": generate}, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *sys.argv[3:4])
