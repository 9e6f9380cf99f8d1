#!/usr/bin/env python3
"""Reference fixtures from llama.cpp for the encoder families (scripts/synthesize-gguf.py --family bert|bert-rerank).

    make-encoder-reference.py OUT_DIR TOKENIZER.gguf [FAMILY ...]

(every family when none is named; `nomic-bert`, nomic-embed-text's layout, and `xlmr`, bge-m3's, are
recorded as `bert` is, `xlmr-rerank`, bge-reranker-v2-m3's, as `bert-rerank`; the XLM-R families borrow the
vocabulary at $XLMR_VOCAB, by default llama.cpp's models/ggml-vocab-nomic-bert-moe.gguf; `qwen3-rerank`,
Qwen3-Reranker's layout, records its pairs through its rerank template and both outputs, p(yes) and p(no),
without a float64 score; `qwen3-embed-eos` is `qwen3-embed` with add_eos_token, whose ids end in EOS)

and for the decoder embedding family `qwen3-embed` (Qwen3-Embedding's layout, last-token pooling) the same
as `bert`, with the tokenizer copied from TOKENIZER.gguf (the default model, as the decoder families do).

For each family and each file type the tests synthesize (F16, Q8_0) it writes the GGUF, runs it in llama.cpp
(llama-cpp-python, `embedding=True`, the model's own pooling type) and records, in OUT_DIR/FAMILY.json:
  - the file's sha256 (the test synthesizes it again and must get the same bytes);
  - `tokenize`: texts and llama.cpp's ids for them (`add_bos=True, special=True`, as its server tokenizes an
    embedding input: [CLS] ... [SEP], special markers matched);
  - `bert`: per text, the pooled embedding L2-normalised (llama.cpp's server default, `embd_normalize` 2);
  - `bert-rerank`: per (query, document) pair, the ids as llama.cpp's server formats a rerank input
    (`format_prompt_rerank`: BOS, query, EOS if add_eos, SEP if add_sep, document, EOS if add_eos) and the rank
    pooling's raw score; beside it `exact_score`, the same forward in float64 numpy on the file's dequantized
    weights (llama.cpp's graph: tanh GELU, type row 0). llama.cpp's CPU matmuls round F16 files'
    activations to f16, so its own distance from the exact score sets how close the test can ask ours to be.
Run it with the reference venv (~/.cache/model-runner/reference-venv) whose llama-cpp-python is 0.3.36.
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

TYPES = ["f16", "q8_0"]
# Families recorded as embeddings; the others are rerankers.
EMBEDDERS = ("bert", "qwen3-embed", "nomic-bert", "xlmr", "qwen3-embed-eos", "jina-bert-v2")
FAMILIES = ["bert", "bert-rerank", "qwen3-embed", "nomic-bert", "xlmr", "xlmr-rerank", "qwen3-rerank",
            "qwen3-embed-eos", "bert-tokens", "jina-bert-v2"]
# Families whose pooling is none: only their ids are recorded (the server test checks they are refused).
PER_TOKEN = ("bert-tokens",)
# The XLM-R families borrow llama.cpp's own XLM-R vocabulary (models/ggml-vocab-nomic-bert-moe.gguf in its
# source) and are tokenized further on texts that exercise the Unigram tokenizer's charsmap normalisation
# (NFKC: full-width forms, ligatures, circled digits, compatibility spaces), its space handling, unknown
# code points and markers.
UNIGRAM_TEXTS = [
    "\uff21\uff22\uff23 \uff11\uff12\uff13 \ufb01ne \u2460\u2461 \u00bd caf\u00e9 cafe\u0301 \u212b \u2126",
    "Der Stra\u00dfenverkehr in M\u00fcnchen ist \u00fcberlastet. \u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435, \u043c\u0438\u0440!",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u4e2d\u6587\u3001\ud55c\uad6d\uc5b4 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0939\u093f\u0928\u094d\u0926\u0940",
    "a\u00a0b\u2003c\u3000d  e\t\tf\n\ng \u200bh",
    "<s>markers</s> <mask> <unk> <pad> inside text",
    "\U0001F642\U0001F680 \U00010348 \ue000 \u0007bell \u00ad soft",
    "",
    " ",
]

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, World! Running tests: tokenization isn't hard?",
    "Caf\u00e9 r\u00e9sum\u00e9 na\u00efve \u2014 D\u00e9j\u00e0 vu, \u00bfqu\u00e9? \u00a1s\u00ed!",
    "\u4e2d\u6587 text and numbers 12345 $100 + 3 = 103 \u20ac5",
    "  leading and trailing spaces\t\nnewlines  ",
    "unaffable xyzzy stra\u00dfe emoji \U0001F642 cats",
    "[CLS] markers [SEP] inside [MASK] text",
    "Machine learning models rank documents for a search query; the embedding of each document is "
    "compared with the embedding of the query, and the best documents come first. " * 3,
]

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital city of France.",
    "Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    "France is a country; its capital is Paris, on the river Seine.",
    "Bananas and apples are fruit.",
]


def pooled(llm, ids, n_out):
    """The pooled output of sequence 0 for `ids`, as Llama.embed computes it (one sequence, every token an output)."""
    llm._batch.reset()
    llm._batch.add_sequence(ids, 0, True)
    llm._ctx.kv_cache_clear()
    llm._ctx.decode(llm._batch)
    ptr = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
    out = [float(ptr[i]) for i in range(n_out)]
    llm._ctx.kv_cache_clear()
    return out


def normalized(v):
    norm = float(np.linalg.norm(v))
    return v if norm == 0.0 else [x / norm for x in v]


def weights(path):
    """Every tensor of the GGUF dequantized to float64, in numpy's (rows, cols) order."""
    import gguf
    reader = gguf.GGUFReader(path)
    out = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(data, dtype=np.float64).reshape([int(d) for d in reversed(t.shape)])
    return out


def exact_forward(w, ids, eps=1e-12, heads=4):
    """llama.cpp's BERT graph (models/bert.cpp, build_pooling's rank) in float64: the rank score."""
    def norm(x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    n = len(ids)
    x = w["token_embd.weight"][ids] + w["token_types.weight"][0] + w["position_embd.weight"][:n]
    x = norm(x, "token_embd_norm")
    layer = 0
    while f"blk.{layer}.attn_q.weight" in w:
        p = f"blk.{layer}"
        lin = lambda v, name: v @ w[f"{p}.{name}.weight"].T + w[f"{p}.{name}.bias"]
        q, k, v = (lin(x, name).reshape(n, heads, -1).transpose(1, 0, 2) for name in ("attn_q", "attn_k", "attn_v"))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        attended = (probs @ v).transpose(1, 0, 2).reshape(n, -1)
        h = norm(lin(attended, "attn_output") + x, f"{p}.attn_output_norm")
        x = norm(lin(gelu(lin(h, "ffn_up")), "ffn_down") + h, f"{p}.layer_output_norm")
        layer += 1
    cls = np.tanh(x[0] @ w["cls.weight"].T + w["cls.bias"])
    return float((cls @ w["cls.output.weight"].T + w["cls.output.bias"])[0])


def rerank_ids(llm, query, document):
    """llama.cpp's server `format_prompt_rerank`: the file's rerank template filled and tokenized without
    added tokens, markers matched; else BOS, query, EOS, SEP, document, EOS as the vocabulary adds them."""
    template = llama_cpp.llama_model_chat_template(llm.model, b"rerank")
    if template:
        prompt = template.decode("utf-8").replace("{query}", query).replace("{document}", document)
        return llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    q = llm.tokenize(query.encode("utf-8"), add_bos=False, special=False)
    d = llm.tokenize(document.encode("utf-8"), add_bos=False, special=False)
    eos = llama_cpp.llama_vocab_eos(vocab)
    if eos == -1:
        eos = llama_cpp.llama_vocab_sep(vocab)
    ids = []
    if llama_cpp.llama_vocab_get_add_bos(vocab):
        ids.append(llama_cpp.llama_vocab_bos(vocab))
    ids += q
    if llama_cpp.llama_vocab_get_add_eos(vocab):
        ids.append(eos)
    if llama_cpp.llama_vocab_get_add_sep(vocab):
        ids.append(llama_cpp.llama_vocab_sep(vocab))
    ids += d
    if llama_cpp.llama_vocab_get_add_eos(vocab):
        ids.append(eos)
    return ids


def reference_for(family, path):
    llm = Llama(model_path=path, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2, embedding=True,
                seed=0, verbose=False)
    texts = TEXTS + (UNIGRAM_TEXTS if family.startswith("xlmr") else [])
    tokenize = [{"text": t, "ids": llm.tokenize(t.encode("utf-8"), add_bos=True, special=True)} for t in texts]
    out = {"tokenize": tokenize, "pooling_type": int(llm.pooling_type())}
    if family in PER_TOKEN:
        return out
    if family in EMBEDDERS:
        out["embeddings"] = [{"ids": case["ids"], "embedding": normalized(pooled(llm, case["ids"], llm.n_embd()))}
                             for case in tokenize if case["ids"]]
    else:
        n_cls = llama_cpp.llama_model_n_cls_out(llm.model)
        out["query"] = QUERY
        out["documents"] = DOCUMENTS
        out["scores"] = []
        # The float64 forward is BERT's; a decoder reranker's outputs are probabilities, recorded whole.
        w = weights(path) if not family.startswith("qwen3") else None
        for doc in DOCUMENTS:
            ids = rerank_ids(llm, QUERY, doc)
            outputs = pooled(llm, ids, n_cls)
            case = {"ids": ids, "score": outputs[0], "outputs": outputs}
            if w is not None:
                case["exact_score"] = exact_forward(w, ids)
            out["scores"].append(case)
    return out


def main(out_dir, tokenizer, families):
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)
    xlmr_vocab = os.path.join(os.path.dirname(llama_cpp.__file__), "..", "vendor", "llama.cpp", "models",
                              "ggml-vocab-nomic-bert-moe.gguf")
    xlmr_vocab = os.environ.get("XLMR_VOCAB", xlmr_vocab)
    for family in families or FAMILIES:
        extra = (["--tokenizer-from", tokenizer] if family.startswith("qwen3") else
                 ["--tokenizer-from", xlmr_vocab] if family.startswith("xlmr") else [])
        files = {}
        for type_name in TYPES:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"{family}-{type_name}.gguf")
                subprocess.run([sys.executable, os.path.join(here, "synthesize-gguf.py"), "--family", family,
                                "--out", path, "--type", type_name, *extra], check=True)
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                files[type_name] = {"sha256": digest, **reference_for(family, path)}
            print(family, type_name, file=sys.stderr)
        with open(os.path.join(out_dir, f"{family}.json"), "w") as f:
            json.dump({"family": family, "llama_cpp_python": importlib.metadata.version("llama_cpp_python"),
                       "gguf": importlib.metadata.version("gguf"), "numpy": np.__version__, "files": files},
                      f, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
