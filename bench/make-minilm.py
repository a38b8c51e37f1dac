#!/usr/bin/python3
"""Generate a MiniLM-shaped int8 BERT sentiment head for the benchmarks.

    /usr/bin/python3 bench/make-minilm.py [--out bench/models/minilm-l6-sentiment]

6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522 (the shape of
sentence-transformers/all-MiniLM-L6-v2), random weights, exported and
int8-quantized with the fixture tooling (tools/fixtures/bert.py, generate.py,
quantize.py) into a Hugging Face layout: config.json, tokenizer files (the
fixtures' WordPiece vocabulary), onnx/model_quantized.onnx (~22 MB, the file
every benchmark serves) and onnx/model.onnx (fp32, used only to put the int8
error in context). Deterministic.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tools", "fixtures"))
sys.dont_write_bytecode = True

import torch  # noqa: E402

import bert as B  # noqa: E402
import generate as G  # noqa: E402
from quantize import quantize_dynamic  # noqa: E402

# The fixtures' BERT config at MiniLM-L6's size.
MINILM = dict(G.SIZES, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "models", "minilm-l6-sentiment"))
    args = ap.parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(7)
    spec = G.Spec("minilm-l6-sentiment", 7, B.BertForSequenceClassification, "MiniLM-shaped 3-way sentiment",
                  id2label=LABELS)
    model = B.BertForSequenceClassification(B.BertConfig(**MINILM, id2label=LABELS))
    G.init_weights(model, torch.Generator().manual_seed(spec.seed))
    model.eval()
    fp32 = G.export_onnx(spec, model)
    G.save_onnx(fp32, os.path.join(args.out, "onnx", "model.onnx"))
    q = quantize_dynamic(fp32, "int8")
    G.dedupe_check(q)
    G.save_onnx(q, os.path.join(args.out, "onnx", "model_quantized.onnx"))
    G.write_json(os.path.join(args.out, "config.json"), model.config.to_hf_dict(model.architecture))
    G.write_tokenizer_files(args.out)
    size = os.path.getsize(os.path.join(args.out, "onnx", "model_quantized.onnx"))
    print(f"{args.out}: int8 graph {size / 2**20:.1f} MiB in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
