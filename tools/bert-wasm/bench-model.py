"""Writes a MiniLM-L6-shaped random BERT (6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522)
for benchmarking bert-wasm against onnxruntime-web: <out>/model.onnx (fp32) and
<out>/model_quantized.onnx (dynamic int8, tools/fixtures/quantize.py). Not a test fixture.
Unlike bench/make-minilm.py (the fixtures' deliberately large random weights, whose logits are chaotic
under int8), the weights here have a trained model's scale (0.05), so that the logit differences
between engines mean something.

    /usr/bin/python3 tools/bert-wasm/bench-model.py /tmp/bench-minilm
"""
import io
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
import onnx  # noqa: E402
import torch  # noqa: E402

import bert as B  # noqa: E402
from quantize import quantize_dynamic  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench-minilm"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
cfg = B.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, id2label={0: "LABEL_0", 1: "LABEL_1"})
model = B.BertForSequenceClassification(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "LayerNorm.weight" in name:
            p.copy_(1 + 0.05 * torch.randn(p.shape))
        elif name.endswith("bias"):
            p.copy_(0.02 * torch.randn(p.shape))
        else:
            p.copy_(0.05 * torch.randn(p.shape))
names = ["input_ids", "attention_mask", "token_type_ids"]
shape = (1, 128)
dummy = (torch.randint(1000, 2000, shape), torch.ones(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long))
axes = {0: "batch_size", 1: "sequence_length"}
buf = io.BytesIO()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(model, dummy, buf, input_names=names, output_names=["logits"],
                      dynamic_axes={**{n: axes for n in names}, "logits": {0: "batch_size"}}, opset_version=14, do_constant_folding=True)
m = onnx.load_from_string(buf.getvalue())
onnx.save(m, os.path.join(out, "model.onnx"))
onnx.save(quantize_dynamic(m, "int8"), os.path.join(out, "model_quantized.onnx"))
print("wrote", out)
