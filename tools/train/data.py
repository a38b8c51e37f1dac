"""Dataset readers and the deterministic train / held-out splits.

The raw files are READ from the shared data folder (default
``../shared/data`` beside the checkout, or ``$BERT_EDGE_DATA``); nothing
from them is ever written into the repository. ``eval/data.ts`` implements
the same readers and the same split rules, so that the fp32 PyTorch metrics
and the int8 metrics served over HTTP are computed on identical examples.

Split rules (no RNG, so that TypeScript can reproduce them exactly):

* SST-2: train = train.alps-resplit-90.tsv + train.alps-resplit-10.tsv, eval = dev.tsv (872).
* MRPC: train = train.tsv (GLUE train), eval = msr_paraphrase_test.txt (1725).
* CoNLL-2003: train = train.txt, eval = test.txt (testb); valid.txt unused.
* SQuAD v1.1 dev: article ``i`` (file order) is held out when ``i % 5 == 4``
  (9 of 48 articles), the other articles train.
* CODAH: row ``i`` (file order) is held out when ``i % 5 == 4`` (20 %).
* Fill-mask: SST-2 dev sentences (never seen in MLM pretraining); in each,
  the first word at or after the middle (``len(words) // 2``) that is
  ``[a-z]+``, at least 3 letters long and a whole-word vocabulary entry is
  replaced by ``[MASK]``; sentences without such a word are skipped.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("BERT_EDGE_DATA") or os.path.join(os.path.dirname(REPO), "shared", "data")

NER_LABELS = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def _p(*parts: str) -> str:
    return os.path.join(DATA, *parts)


def _lines(path: str) -> List[str]:
    with open(path, encoding="utf-8-sig") as f:
        return f.read().split("\n")


def read_sst2(split: str) -> List[Tuple[str, int]]:
    files = ["train.alps-resplit-90.tsv", "train.alps-resplit-10.tsv"] if split == "train" else ["dev.tsv"]
    out = []
    for fn in files:
        for line in _lines(_p("sst2", fn))[1:]:
            if not line.strip():
                continue
            s, lab = line.rsplit("\t", 1)
            out.append((s.strip(), int(lab)))
    return out


def read_mrpc(split: str) -> List[Tuple[str, str, int]]:
    fn = "train.tsv" if split == "train" else "msr_paraphrase_test.txt"
    out = []
    for line in _lines(_p("mrpc", fn))[1:]:
        if not line.strip():
            continue
        cols = line.split("\t")
        out.append((cols[3], cols[4], int(cols[0])))
    return out


def read_conll(split: str) -> List[Tuple[List[str], List[str]]]:
    fn = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}[split]
    sents, words, tags = [], [], []
    for line in _lines(_p("conll2003", fn)) + [""]:
        line = line.strip()
        if not line or line.startswith("-DOCSTART-"):
            if words:
                sents.append((words, tags))
            words, tags = [], []
            continue
        cols = line.split(" ")
        words.append(cols[0])
        tags.append(cols[-1])
    return sents


def read_squad(split: str) -> List[dict]:
    with open(_p("squad", "dev-v1.1.json"), encoding="utf-8") as f:
        articles = json.load(f)["data"]
    out = []
    for i, art in enumerate(articles):
        if (i % 5 == 4) != (split == "eval"):
            continue
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                out.append({"id": qa["id"], "context": para["context"], "question": qa["question"],
                            "answers": [a["text"] for a in qa["answers"]],
                            "answer_starts": [a["answer_start"] for a in qa["answers"]]})
    return out


def read_codah(split: str) -> List[Tuple[str, List[str], int]]:
    out = []
    rows = [line for line in _lines(_p("codah", "full_data.tsv")) if line.strip()]
    for i, line in enumerate(rows):
        if (i % 5 == 4) != (split == "eval"):
            continue
        cols = line.split("\t")
        out.append((cols[1], cols[2:6], int(cols[6])))
    return out


_WORD = re.compile(r"^[a-z]{3,}$")


def fill_mask_items(vocab: Dict[str, int]) -> List[Tuple[str, str]]:
    """[(masked sentence, target word)] from the SST-2 dev sentences."""
    out = []
    for s, _ in read_sst2("dev"):
        words = s.split(" ")
        for i in range(len(words) // 2, len(words)):
            w = words[i]
            if _WORD.match(w) and w in vocab:
                out.append((" ".join(words[:i] + ["[MASK]"] + words[i + 1:]), w))
                break
    return out


def mlm_texts() -> List[str]:
    """Unlabelled text for MLM pretraining: training splits only."""
    texts = [s for s, _ in read_sst2("train")]
    seen = set()
    for a, b, _ in read_mrpc("train"):
        for s in (a, b):
            if s not in seen:
                seen.add(s)
                texts.append(s)
    texts += [" ".join(w) for w, _ in read_conll("train")]
    ctx = set()
    for ex in read_squad("train"):
        texts.append(ex["question"])
        if ex["context"] not in ctx:
            ctx.add(ex["context"])
            texts.append(ex["context"])
    for p, ch, lab in read_codah("train"):
        texts.append(p + " " + ch[lab])
    return texts
