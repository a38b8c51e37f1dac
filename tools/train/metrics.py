"""Metrics, identical to eval/metrics.ts."""

from __future__ import annotations

import collections
import re
import string
from typing import Dict, List, Sequence, Set, Tuple


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    return sum(int(p == g) for p, g in zip(pred, gold)) / len(gold)


def binary_f1(pred: Sequence[int], gold: Sequence[int]) -> float:
    tp = sum(1 for p, g in zip(pred, gold) if p == 1 and g == 1)
    fp = sum(1 for p, g in zip(pred, gold) if p == 1 and g == 0)
    fn = sum(1 for p, g in zip(pred, gold) if p == 0 and g == 1)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


# -- NER ---------------------------------------------------------------------


def _tag(label: str) -> Tuple[str, str]:
    """transformers TokenClassificationPipeline.get_tag."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def group_entities(words: List[list]) -> List[Tuple[int, int, str]]:
    """words: [start, end, label] per pipeline word (aggregation "first"). Groups them as
    the pipeline's group_entities does and drops "O": [(start, end, type)]."""
    groups: List[list] = []
    for s, e, lab in words:
        bi, tag = _tag(lab)
        if groups and groups[-1][2] == tag and bi != "B":
            groups[-1][1] = e
        else:
            groups.append([s, e, tag])
    return [(s, e, t) for s, e, t in groups if t != "O"]


def char_entities_to_word_spans(ents, spans: List[Tuple[int, int]]) -> Set[Tuple[int, int, str]]:
    """(start char, end char, type) → (first CoNLL word, last CoNLL word, type); an entity
    counts only when it starts and ends on CoNLL word boundaries (exact span)."""
    starts = {s: i for i, (s, _) in enumerate(spans)}
    ends = {e: i for i, (_, e) in enumerate(spans)}
    out = set()
    for s, e, t in ents:
        if s in starts and e in ends:
            out.add((starts[s], ends[e], t))
        else:
            out.add((-1 - s, -1 - e, t))  # misaligned: can only be a false positive
    return out


def bio_spans(tags: Sequence[str]) -> Set[Tuple[int, int, str]]:
    """Gold entities from BIO tags (conlleval: an I- after O or another type starts one)."""
    out, start, typ = set(), None, None
    for i, t in enumerate(list(tags) + ["O"]):
        bi, tt = _tag(t)
        if t == "O" or bi == "B" or tt != typ:
            if typ is not None and typ != "O":
                out.add((start, i - 1, typ))
            start, typ = (i, tt) if t != "O" else (None, None)
    return out


def entity_prf(pred: List[Set], gold: List[Set]) -> Dict[str, float]:
    tp = sum(len(p & g) for p, g in zip(pred, gold))
    np_ = sum(len(p) for p in pred)
    ng = sum(len(g) for g in gold)
    prec = tp / np_ if np_ else 0.0
    rec = tp / ng if ng else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": prec, "recall": rec, "f1": f1}


# -- SQuAD (official v1.1 evaluate script normalisation) ------------------------


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def squad_em(pred: str, golds: Sequence[str]) -> float:
    return max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)


def squad_f1(pred: str, golds: Sequence[str]) -> float:
    return max(_f1(pred, g) for g in golds)
