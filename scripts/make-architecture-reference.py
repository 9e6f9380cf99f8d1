#!/usr/bin/env python3
"""Reference fixtures from llama.cpp for the model families proven by structure (scripts/synthesize-gguf.py).

    make-architecture-reference.py TOKENIZER.gguf OUT_DIR [FAMILY ...]
    make-architecture-reference.py --k-quants TOKENIZER.gguf OUT_DIR [FAMILY[:TYPE] ...]

For each family and each file type the tests synthesize (F16, Q8_0, Q4_0; for gpt-oss F16, Q8_0 and
MXFP4 experts with Q8_0 elsewhere), it writes the GGUF with
scripts/synthesize-gguf.py, runs it in llama.cpp (llama-cpp-python, default settings: F16 KV cache) and
records, in OUT_DIR/FAMILY.json:
  - the file's sha256 (the test synthesizes it again and must get the same bytes);
  - per prompt: the prompt's ids, llama.cpp's greedy continuation, and at every step of it (the prompt's last
    position, then each continuation token fed back, one at a time) the top-K log-probabilities plus the
    log-probability mass outside them, enough for the top-1 check and a KL divergence over the top K and
    the rest (a lower bound of the full KL: merging tokens never increases it);
  - llama.cpp's own spread on the same file and path: the same steps with an F32 KV cache, compared with the
    reference exactly as the test compares our engine (mean and largest KL, decisive top-1 disagreements).
"""
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import llama_cpp
from llama_cpp import Llama

TYPES = ["f16", "q8_0", "q4_0"]
# Families whose released files come in another type: gpt-oss's experts are MXFP4 (the rest Q8_0).
FAMILY_TYPES = {"gpt-oss": ["f16", "q8_0", "mxfp4"]}
FAMILIES = ["llama3", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "qwen3moe", "mixtral", "qwen2moe", "gpt-oss",
            "smollm3", "granite", "granitemoe"]
STEPS = 24
TOP_K = 16
NEAR_TIE = 0.5

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "In 1969, Apollo 11 carried Neil Armstrong, Buzz Aldrin and Michael Collins to the Moon; Armstrong and "
    "Aldrin walked on its surface while Collins orbited above, and all three returned safely to Earth.",
]


def log_softmax(row):
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


def top_k(lp):
    """The K most likely tokens `[[id, logprob], ...]` and the log of the probability left outside them."""
    best = np.argsort(-lp, kind="stable")[:TOP_K]
    rest = max(1.0 - float(np.exp(lp[best]).sum()), 1e-12)
    return [[int(i), round(float(lp[i]), 6)] for i in best], round(float(np.log(rest)), 6)


def kl_over_top(reference, rest_log, lp):
    """KL(reference || other) over the reference's top K and the rest, other given as full log-probabilities."""
    ids = [i for i, _ in reference]
    p = np.exp([l for _, l in reference])
    q = np.exp(lp[ids])
    kl = float((p * (np.array([l for _, l in reference]) - lp[ids])).sum())
    p_rest, q_rest = np.exp(rest_log), max(1.0 - float(q.sum()), 1e-12)
    return kl + p_rest * (rest_log - np.log(q_rest))


def steps_of(llm, ids, continuation):
    """Log-probabilities at the prompt's last position and after each continuation token fed back."""
    llm.reset()
    llm.eval(ids)
    rows = [log_softmax(llm.scores[llm.n_tokens - 1])]
    for token in continuation[:-1]:
        llm.eval([token])
        rows.append(log_softmax(llm.scores[llm.n_tokens - 1]))
    return rows


def reference_for(path):
    llm = Llama(model_path=path, n_ctx=512, n_threads=2, logits_all=True, seed=0, verbose=False)
    f32_kv = Llama(model_path=path, n_ctx=512, n_threads=2, logits_all=True, seed=0, verbose=False,
                   type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    cases, kls, disagreements, decisive = [], [], 0, 0
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        greedy, tops, rests = [], [], []
        for _ in range(STEPS):
            lp = log_softmax(llm.scores[llm.n_tokens - 1])
            top, rest = top_k(lp)
            tops.append(top)
            rests.append(rest)
            greedy.append(top[0][0])
            llm.eval([top[0][0]])
        for top, rest, lp in zip(tops, rests, steps_of(f32_kv, ids, greedy)):
            kls.append(kl_over_top(top, rest, lp))
            if top[0][1] - top[1][1] >= NEAR_TIE:
                decisive += 1
                disagreements += int(np.argmax(lp)) != top[0][0]
        cases.append({"prompt": prompt, "prompt_ids": ids, "greedy_ids": greedy, "top_logprobs": tops,
                      "rest_logprob": rests})
    spread = {"compared": "llama.cpp F32 KV cache against its default F16, same file and path",
              "mean_kl": float(np.mean(kls)), "max_kl": float(np.max(kls)),
              "decisive_steps": decisive, "decisive_disagreements": disagreements}
    return cases, spread


# The types only llama.cpp's quantizer writes: K-quants and the 4-bit i-quants (IQ4_NL, IQ4_XS: no
# importance matrix needed).
K_QUANTS = {"q2_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K, "q3_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
            "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
            "iq4_nl": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL, "iq4_xs": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_XS}
# gpt-oss also as llama-quantize's MXFP4_MOE (experts MXFP4, the rest Q8_0), the type its files ship in.
FAMILY_K_QUANTS = {"gpt-oss": {**K_QUANTS, "mxfp4_moe": llama_cpp.LLAMA_FTYPE_MOSTLY_MXFP4_MOE}}


def k_quants(tokenizer, out_dir, families):
    """K-quant and IQ4 files, which only llama.cpp's quantizer writes: hidden 256 (K-quant rows are 256 wide), F32
    synthesized, then quantized by llama_model_quantize as llama-quantize does. The files (~20 MB) stay in
    OUT_DIR with a fixture beside each; `tests/architectures.rs`'s ignored test compares them when pointed
    there (MODEL_RUNNER_K_QUANT_DIR). `FAMILY:TYPE` (e.g. `llama3:q2_k`) makes only that type's file."""
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)
    for spec in families or FAMILIES:
        family, _, only = spec.partition(":")
        source = os.path.join(out_dir, f"{family}-f32.gguf")
        subprocess.run([sys.executable, os.path.join(here, "synthesize-gguf.py"), "--family", family,
                        "--tokenizer-from", tokenizer, "--out", source, "--type", "f32", "--hidden", "256"],
                       check=True)
        for name, ftype in FAMILY_K_QUANTS.get(family, K_QUANTS).items():
            if only and name != only:
                continue
            path = os.path.join(out_dir, f"{family}-{name}.gguf")
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            if llama_cpp.llama_model_quantize(source.encode(), path.encode(), params) != 0:
                sys.exit(f"quantizing {source} to {name} failed")
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            cases, spread = reference_for(path)
            print(family, name, json.dumps(spread), file=sys.stderr)
            with open(os.path.join(out_dir, f"{family}-{name}.json"), "w") as f:
                json.dump({"family": family, "gguf": os.path.basename(path), "sha256": digest,
                           "llama_cpp_spread": spread, "generate": cases}, f)
        os.remove(source)


def main(tokenizer, out_dir, families):
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)

    for family in families or FAMILIES:
        files = {}
        for type_name in FAMILY_TYPES.get(family, TYPES):
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"{family}-{type_name}.gguf")
                subprocess.run([sys.executable, os.path.join(here, "synthesize-gguf.py"), "--family", family,
                                "--tokenizer-from", tokenizer, "--out", path, "--type", type_name], check=True)
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                cases, spread = reference_for(path)
            files[type_name] = {"sha256": digest, "llama_cpp_spread": spread, "generate": cases}
            print(family, type_name, json.dumps(spread), file=sys.stderr)
        with open(os.path.join(out_dir, f"{family}.json"), "w") as f:
            json.dump({"family": family, "llama_cpp_python": "0.3.36", "gguf": importlib.metadata.version("gguf"),
                       "numpy": np.__version__, "tokenizer_from": os.path.basename(tokenizer),
                       "top_k": TOP_K, "steps": STEPS, "files": files}, f, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    if sys.argv[1] == "--k-quants":
        k_quants(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3:])
