"""Loads a `moegrad export --format hf` folder with transformers and prints, as JSON, the
mean next-token cross-entropy over a byte file scored in back-to-back windows of
`context + 1` tokens (the windows `moegrad eval` uses for a text of k * context + 1 bytes).

usage: transformers_loss.py DIR TEXT_FILE CONTEXT
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

directory, text_file, context = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids = list(open(text_file, "rb").read())
assert (len(ids) - 1) % context == 0, "the text must be k * context + 1 bytes"
model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
model.eval()
windows = (len(ids) - 1) // context
inputs = torch.tensor([ids[i * context : (i + 1) * context] for i in range(windows)])
targets = torch.tensor([ids[i * context + 1 : (i + 1) * context + 1] for i in range(windows)])
with torch.no_grad():
    logits = model(input_ids=inputs).logits.float()
loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
print(json.dumps({"loss": loss.item(), "architecture": type(model).__name__, "tokens": targets.numel()}))
