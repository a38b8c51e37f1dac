#!/usr/bin/python3
"""Train the small bert-edge demo models from scratch on 2 CPU cores.

    /usr/bin/python3 tools/train/train.py mlm      [options]   # MLM pretraining (the encoder every head starts from)
    /usr/bin/python3 tools/train/train.py finetune --task sst2|mrpc|conll03|squad|codah [options]
    /usr/bin/python3 tools/train/train.py export   --task mlm|sst2|...      # ONNX fp32 + int8 into models/demo/

See tools/train/README.md. Needs only torch (Debian 1.13), onnx and numpy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "tools", "fixtures")
sys.path.insert(0, FIXTURES)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

import bert as B  # noqa: E402
from wordpiece import WordPieceTokenizer  # noqa: E402
import data as D  # noqa: E402
import metrics as M  # noqa: E402

RUNS = os.path.join(HERE, "runs")
DEMO = os.path.join(REPO, "models", "demo")
TOKENIZER_JSON = os.path.join(FIXTURES, "tokenizer", "tokenizer.json")

SIZES = dict(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=512, max_position_embeddings=512, type_vocab_size=2)

TASKS = {
    # name: (model class, kind, id2label, problem_type, demo folder)
    "mlm": (B.BertForMaskedLM, "mlm", None, None, "bert-edge-mlm"),
    "sst2": (B.BertForSequenceClassification, "seq", {0: "NEGATIVE", 1: "POSITIVE"},
             "single_label_classification", "bert-edge-sst2"),
    "mrpc": (B.BertForSequenceClassification, "seq", {0: "not_equivalent", 1: "equivalent"},
             "single_label_classification", "bert-edge-mrpc"),
    "conll03": (B.BertForTokenClassification, "tok", dict(enumerate(D.NER_LABELS)), None, "bert-edge-conll03"),
    "squad": (B.BertForQuestionAnswering, "qa", None, None, "bert-edge-squad"),
    "codah": (B.BertForMultipleChoice, "mc", None, None, "bert-edge-codah"),
}


# ---------------------------------------------------------------------------
# Progress bar (tqdm is not installed)
# ---------------------------------------------------------------------------


class Progress:
    def __init__(self, total: int, desc: str = "", initial: int = 0, every: float = 1.0):
        self.total, self.desc, self.n = total, desc, initial
        self.t0, self.n0, self.last, self.every = time.time(), initial, 0.0, every
        self.post = ""
        self.tty = sys.stderr.isatty()

    def update(self, k: int = 1, **post) -> None:
        self.n += k
        if post:
            self.post = " ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}" for a, b in post.items())
        now = time.time()
        if now - self.last >= (self.every if self.tty else 30.0) or self.n >= self.total:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.n / max(1, self.total)
        rate = (self.n - self.n0) / max(1e-9, now - self.t0)
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        fmt = lambda s: "?" if s == float("inf") else f"{int(s) // 60:d}:{int(s) % 60:02d}"  # noqa: E731
        line = (f"{self.desc} [{bar}] {self.n}/{self.total} {100 * frac:5.1f}% "
                f"{rate:.2f}it/s {fmt(now - self.t0)}<{fmt(eta)} {self.post}")
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        self._draw(time.time())
        if self.tty:
            sys.stderr.write("\n")


# ---------------------------------------------------------------------------
# Optimiser and schedules (same formulas as transformers.get_scheduler)
# ---------------------------------------------------------------------------

SCHEDULES = ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]


def schedule_lambda(name: str, warmup: int, total: int, num_cycles: Optional[float] = None,
                    lr_init: float = 1.0, lr_end: float = 1e-7, power: float = 1.0):
    if name == "constant":
        return lambda step: 1.0
    if name == "constant_with_warmup":
        return lambda step: float(step) / float(max(1.0, warmup)) if step < warmup else 1.0

    def warm(step):
        return float(step) / float(max(1, warmup))

    if name == "linear":
        return lambda step: warm(step) if step < warmup else max(
            0.0, float(total - step) / float(max(1, total - warmup)))
    def then(decay):
        """Warm-up, then decay(progress), progress going from 0 to 1 over the steps after warm-up."""
        return lambda step: warm(step) if step < warmup else decay(float(step - warmup) / float(max(1, total - warmup)))

    if name == "cosine":
        c = 0.5 if num_cycles is None else num_cycles
        return then(lambda progress: max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(c) * 2.0 * progress))))
    if name == "cosine_with_restarts":
        c = 1 if num_cycles is None else num_cycles
        return then(lambda progress: 0.0 if progress >= 1.0 else max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(c) * progress) % 1.0)))))
    if name == "polynomial":
        if not lr_init > lr_end:
            raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")

        def f(step):
            if step < warmup:
                return warm(step)
            if step > total:
                return lr_end / lr_init
            lr_range = lr_init - lr_end
            decay_steps = total - warmup
            pct_remaining = 1 - (step - warmup) / decay_steps
            return (lr_range * pct_remaining ** power + lr_end) / lr_init
        return f
    raise ValueError(f"unknown schedule {name!r}; one of {SCHEDULES}")


def make_optimizer(model: nn.Module, args) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, int]:
    decay, no_decay, seen = [], [], set()
    for n, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if (n.endswith("bias") or "LayerNorm" in n) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    total = args.total_steps
    warmup = args.warmup_steps if args.warmup_steps is not None else math.ceil(args.warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, schedule_lambda(args.schedule, warmup, total, args.num_cycles, lr_init=args.lr, lr_end=args.lr_end,
                             power=args.power))
    return opt, sched, warmup


# ---------------------------------------------------------------------------
# Model helpers
# ---------------------------------------------------------------------------


def make_config(task: str) -> B.BertConfig:
    _, _, id2label, problem_type, _ = TASKS[task]
    if task == "squad" or task == "mlm":
        id2label = None
    cfg = B.BertConfig(**SIZES, id2label=id2label, problem_type=problem_type)
    if task in ("squad", "codah", "mlm"):
        cfg.num_labels = 2
        cfg.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    return cfg


@torch.no_grad()
def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """HF BertPreTrainedModel._init_weights."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            if name.endswith("predictions.decoder"):
                continue
            mod.weight.normal_(0.0, std)
            if mod.bias is not None:
                mod.bias.zero_()
        elif isinstance(mod, nn.Embedding):
            mod.weight.normal_(0.0, std)
            if mod.padding_idx is not None:
                mod.weight[mod.padding_idx].zero_()
        elif isinstance(mod, nn.LayerNorm):
            mod.weight.fill_(1.0)
            mod.bias.zero_()
    if isinstance(model, B.BertForMaskedLM):
        model.cls.predictions.bias.zero_()


def build_model(task: str, init_from: Optional[str]) -> nn.Module:
    cls = TASKS[task][0]
    model = cls(make_config(task))
    init_weights(model)
    if init_from:
        sd = torch.load(init_from, map_location="cpu")
        sd = sd.get("model", sd)
        # an MLM run started from another MLM checkpoint (continued pretraining) keeps its head too
        enc = {k: v for k, v in sd.items()
               if (task == "mlm" or k.startswith("bert.")) and not k.startswith("bert.pooler")}
        missing, unexpected = model.load_state_dict(enc, strict=False)
        assert not unexpected, unexpected
        log(f"initialised {len(enc)} encoder tensors from {os.path.relpath(init_from, REPO)}; "
            f"{len(missing)} fresh ({', '.join(sorted(set(m.split('.')[0] for m in missing)))})")
    return model


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pad(seqs: Sequence[Sequence[int]], value: int = 0, length: Optional[int] = None) -> torch.Tensor:
    L = length or max(len(s) for s in seqs)
    return torch.tensor([list(s) + [value] * (L - len(s)) for s in seqs], dtype=torch.long)


# ---------------------------------------------------------------------------
# Feature building (tokenisation is cached under tools/train/runs/cache)
# ---------------------------------------------------------------------------

_TOK: Optional[WordPieceTokenizer] = None


def tok() -> WordPieceTokenizer:
    global _TOK
    if _TOK is None:
        _TOK = WordPieceTokenizer.from_tokenizer_json(TOKENIZER_JSON)
    return _TOK


def cached(name: str, fn):
    path = os.path.join(RUNS, "cache", name + ".pt")
    if os.path.exists(path):
        return torch.load(path)
    t0 = time.time()
    obj = fn()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(obj, path)
    log(f"built {name} in {time.time() - t0:.0f}s")
    return obj


def ids_of(text: str) -> List[int]:
    t = tok()
    return [t.vocab.get(p, t.vocab["[UNK]"]) for p, _, _ in t.tokenize_with_offsets(text)]


def pair_ids(a: List[int], b: Optional[List[int]], max_len: int) -> Tuple[List[int], List[int]]:
    """[CLS] a [SEP] (b [SEP]), longest_first truncation."""
    a, b = list(a), (list(b) if b is not None else None)
    budget = max_len - (3 if b is not None else 2)
    while len(a) + (len(b) if b else 0) > budget:
        if b is not None and len(b) > len(a):
            b.pop()
        else:
            a.pop()
    ids = [101] + a + [102]
    tt = [0] * len(ids)
    if b is not None:
        ids += b + [102]
        tt += [1] * (len(b) + 1)
    return ids, tt


def mlm_features(max_len: int):
    texts = D.mlm_texts()
    rng = random.Random(0)
    rng.shuffle(texts)
    seqs, cur = [], []
    for t in texts:
        ids = ids_of(t)
        while ids:
            room = max_len - 2 - len(cur)
            cur += ids[:room]
            ids = ids[room:]
            if len(cur) >= max_len - 2:
                seqs.append([101] + cur + [102])
                cur = []
    if cur:
        seqs.append([101] + cur + [102])
    return seqs


def seq_features(task: str, split: str, max_len: int = 128):
    if task == "sst2":
        rows = [(ids_of(s), None, y) for s, y in D.read_sst2(split)]
    else:
        rows = [(ids_of(a), ids_of(b), y) for a, b, y in D.read_mrpc(split)]
    out = []
    for a, b, y in rows:
        ids, tt = pair_ids(a, b, max_len)
        out.append((ids, tt, y))
    return out


def ner_words(words: List[str]) -> Tuple[str, List[Tuple[int, int]]]:
    """The sentence sent to the server and each CoNLL word's char span."""
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return " ".join(words), spans


def ner_encode(words: List[str], max_len: int = 512):
    """Token ids, offsets, and for each token: index of the CoNLL word it belongs to and
    whether it is the first subword of a pipeline "word" (a pre-token: whitespace and
    punctuation split; "##" pieces continue it), as the HF pipeline's aggregation sees it."""
    t = tok()
    text, spans = ner_words(words)
    pieces = t.tokenize_with_offsets(text)[: max_len - 2]
    starts = {s: i for i, (s, _) in enumerate(spans)}
    ids, offs, word_of, first = [101], [(0, 0)], [-1], [False]
    wi = -1
    for p, s, e in pieces:
        while wi + 1 < len(spans) and spans[wi + 1][0] <= s:
            wi += 1
        ids.append(t.vocab.get(p, t.vocab["[UNK]"]))
        offs.append((s, e))
        word_of.append(wi)
        first.append(not p.startswith("##"))
    ids.append(102)
    offs.append((0, 0))
    word_of.append(-1)
    first.append(False)
    return ids, offs, word_of, first


def ner_features(split: str, max_len: int = 128):
    lab = {l: i for i, l in enumerate(D.NER_LABELS)}
    out = []
    sents = [s for part in split.split("+") for s in D.read_conll(part)]
    for words, tags in sents:
        ids, offs, word_of, first = ner_encode(words, max_len)
        _, spans = ner_words(words)
        labels = []
        for k in range(len(ids)):
            if not first[k] or word_of[k] < 0:
                labels.append(-100)
                continue
            w = word_of[k]
            tag = tags[w]
            if offs[k][0] != spans[w][0] and tag != "O":  # later pre-token inside one CoNLL word
                tag = "I-" + tag[2:]
            labels.append(lab[tag])
        out.append((ids, labels))
    return out


def squad_windows(question: str, context: str, max_len: int = 384, stride: int = 128, max_q: int = 64):
    """HF pipeline / run_qa windows: [CLS] q [SEP] ctx-window [SEP]; returns list of
    (ids, token_type_ids, context offsets per token or None)."""
    t = tok()
    q = ids_of(question)[:max_q]
    cpieces = t.tokenize_with_offsets(context)
    cids = [t.vocab.get(p, t.vocab["[UNK]"]) for p, _, _ in cpieces]
    room = max_len - len(q) - 3
    wins, start = [], 0
    while True:
        end = min(len(cids), start + room)
        ids = [101] + q + [102] + cids[start:end] + [102]
        tt = [0] * (len(q) + 2) + [1] * (end - start + 1)
        offs = [None] * (len(q) + 2) + [(s, e) for _, s, e in cpieces[start:end]] + [None]
        words = [None] * (len(q) + 2) + [p.startswith("##") for p, _, _ in cpieces[start:end]] + [None]
        wins.append((ids, tt, offs, words))
        if end >= len(cids):
            break
        start += room - stride if room > stride else room
    return wins


def squad_features(split: str, max_len: int):
    out = []
    for ex in D.read_squad(split):
        a0, s0 = ex["answers"][0], ex["answer_starts"][0]
        e0 = s0 + len(a0)
        for ids, tt, offs, _ in squad_windows(ex["question"], ex["context"], max_len):
            sp = ep = 0
            ctx = [i for i, o in enumerate(offs) if o is not None]
            if offs[ctx[0]][0] <= s0 and offs[ctx[-1]][1] >= e0:
                sp = next(i for i in ctx if offs[i][1] > s0)
                ep = next(i for i in reversed(ctx) if offs[i][0] < e0)
            out.append((ids, tt, sp, ep))
    return out


def codah_features(split: str, max_len: int = 64):
    out = []
    for prompt, choices, y in D.read_codah(split):
        p = ids_of(prompt)
        enc = [pair_ids(p, ids_of(c), max_len) for c in choices]
        out.append(([e[0] for e in enc], [e[1] for e in enc], y))
    return out


# ---------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------


def mask_tokens(ids: torch.Tensor, gen: torch.Generator, prob: float = 0.15):
    """BERT masking: 15 % of non-special tokens; 80 % [MASK], 10 % random, 10 % kept."""
    labels = ids.clone()
    special = (ids == 0) | (ids == 101) | (ids == 102)
    pick = (torch.rand(ids.shape, generator=gen) < prob) & ~special
    labels[~pick] = -100
    ids = ids.clone()
    r = torch.rand(ids.shape, generator=gen)
    ids[pick & (r < 0.8)] = 103
    rnd = pick & (r >= 0.8) & (r < 0.9)
    ids[rnd] = torch.randint(999, 30522, ids.shape, generator=gen)[rnd]
    return ids, labels


def batches(n: int, bs: int, rng: random.Random, shuffle: bool = True, lengths: Optional[List[int]] = None):
    """Index batches; with lengths, shuffle within length buckets (less padding)."""
    idx = list(range(n))
    if shuffle:
        rng.shuffle(idx)
    if lengths is not None:
        chunks = [idx[i:i + bs * 50] for i in range(0, n, bs * 50)]
        idx = [j for c in chunks for j in sorted(c, key=lambda k: lengths[k])]
    out = [idx[i:i + bs] for i in range(0, n, bs)]
    if shuffle:
        rng.shuffle(out)
    return out


def loss_for(task: str, model: nn.Module, batch):
    if task == "mlm":
        ids, labels = batch
        am = (ids != 0).long()
        hs, _ = model.bert(ids, am)
        sel = labels != -100
        logits = model.cls(hs[sel])
        return F.cross_entropy(logits, labels[sel])
    if task in ("sst2", "mrpc"):
        ids, tt, y = batch
        return F.cross_entropy(model(ids, (ids != 0).long(), tt), y)
    if task == "conll03":
        ids, y = batch
        logits = model(ids, (ids != 0).long(), torch.zeros_like(ids))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
    if task == "squad":
        ids, tt, sp, ep = batch
        s, e = model(ids, (ids != 0).long(), tt)
        return (F.cross_entropy(s, sp) + F.cross_entropy(e, ep)) / 2
    if task == "codah":
        ids, tt, y = batch
        return F.cross_entropy(model(ids, (ids != 0).long(), tt), y)
    raise ValueError(task)


def collate(task: str, feats, idx, gen=None):
    rows = [feats[i] for i in idx]
    if task == "mlm":
        return mask_tokens(pad(rows), gen)
    if task in ("sst2", "mrpc"):
        return pad([r[0] for r in rows]), pad([r[1] for r in rows]), torch.tensor([r[2] for r in rows])
    if task == "conll03":
        return pad([r[0] for r in rows]), pad([r[1] for r in rows], -100)
    if task == "squad":
        return (pad([r[0] for r in rows]), pad([r[1] for r in rows]),
                torch.tensor([r[2] for r in rows]), torch.tensor([r[3] for r in rows]))
    if task == "codah":
        L = max(len(c) for r in rows for c in r[0])
        ids = torch.stack([pad(r[0], 0, L) for r in rows])
        tt = torch.stack([pad(r[1], 0, L) for r in rows])
        return ids, tt, torch.tensor([r[2] for r in rows])
    raise ValueError(task)


def length_of(task: str, f) -> int:
    if task == "mlm":
        return len(f)
    if task == "codah":
        return max(len(c) for c in f[0])
    return len(f[0])


def train_features(task: str, args):
    if task == "mlm":
        return cached(f"mlm-{args.max_len}", lambda: mlm_features(args.max_len))
    if task in ("sst2", "mrpc"):
        return cached(f"{task}-train", lambda: seq_features(task, "train"))
    if task == "conll03":
        split = "train+valid" if args.conll_valid else "train"
        return cached(f"conll03-{split}", lambda: ner_features(split))
    if task == "squad":
        return cached(f"squad-train-{args.max_len}", lambda: squad_features("train", args.max_len))
    if task == "codah":
        return cached("codah-train", lambda: codah_features("train"))
    raise ValueError(task)


def run_dir(task: str, args) -> str:
    return os.path.join(RUNS, args.run_name or task)


def train(task: str, args) -> None:
    torch.set_num_threads(args.threads)
    seed_all(args.seed)
    out = run_dir(task, args)
    os.makedirs(out, exist_ok=True)
    feats = train_features(task, args)
    lengths = [length_of(task, f) for f in feats]
    steps_per_epoch = math.ceil(len(feats) / args.batch_size)
    args.total_steps = args.max_steps or int(steps_per_epoch * args.epochs)
    init = None
    if task == "mlm" and args.init_from:
        init = args.init_from
    elif task != "mlm" and not args.no_pretrained:
        init = args.init_from or os.path.join(RUNS, "mlm", "model.pt")
        if not os.path.exists(init):
            log(f"no MLM checkpoint at {init}: training {task} from random init")
            init = None
    model = build_model(task, init)
    opt, sched, warmup = make_optimizer(model, args)
    step, epoch_start = 0, 0
    ck = os.path.join(out, "checkpoint.pt")
    if args.resume and os.path.exists(ck):
        state = torch.load(ck)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = state["step"]
        random.setstate(state["py_rng"])
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed {ck} at step {step}")
    log(f"{task}: {len(feats)} examples, {args.total_steps} steps (warmup {warmup}), batch {args.batch_size}, "
        f"lr {args.lr}, {args.schedule}, {sum(p.numel() for p in model.parameters())} params")
    json.dump({k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))},
              open(os.path.join(out, "args.json"), "w"), indent=1)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    bar = Progress(args.total_steps, task, initial=step)
    t0, ema, done = time.time(), None, False
    epoch = 0
    skip = step  # batches already consumed when resuming (the epoch order is replayed from the seed)
    while not done:
        order = batches(len(feats), args.batch_size, random.Random(args.seed * 1000 + epoch), True, lengths)
        for bi, idx in enumerate(order):
            if skip > 0:
                skip -= 1
                continue
            batch = collate(task, feats, idx, gen)
            loss = loss_for(task, model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.update(1, loss=ema, lr=sched.get_last_lr()[0])
            if args.save_every and step % args.save_every == 0:
                save_checkpoint(ck, model, opt, sched, step)
            if (step >= args.total_steps or (args.stop_after and step >= args.stop_after)
                    or (args.max_minutes and time.time() - t0 > 60 * args.max_minutes)):
                done = True
                break
        epoch += 1
    bar.close()
    if step < args.total_steps:
        log(f"stopped at step {step}/{args.total_steps} (replay with --stop-after {step})")
    save_checkpoint(ck, model, opt, sched, step)
    torch.save({"model": model.state_dict(), "step": step, "train_loss": ema}, os.path.join(out, "model.pt"))
    log(f"{task}: done in {time.time() - t0:.0f}s, loss {ema:.4f}")
    model.eval()
    metrics = evaluate(task, model, args.eval_limit)
    metrics.update(train_steps=step, train_seconds=round(time.time() - t0), train_loss=round(ema, 4))
    json.dump(metrics, open(os.path.join(out, "eval_fp32.json"), "w"), indent=1)
    log(f"{task} fp32 eval: {json.dumps(metrics)}")


def save_checkpoint(path, model, opt, sched, step) -> None:
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": step, "py_rng": random.getstate(), "torch_rng": torch.get_rng_state()}, path + ".tmp")
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------
# fp32 evaluation (same examples and decoding rules as eval/evaluate.ts)
# ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate(task: str, model: nn.Module, limit: Optional[int] = None) -> dict:
    """limit: only the first examples (smoke tests)."""
    model.eval()
    lim = slice(0, limit)
    if task in ("sst2", "mrpc"):
        feats = seq_features(task, "dev" if task == "sst2" else "test", 512)[lim]
        preds = []
        for i in range(0, len(feats), 64):
            ids, tt, _ = collate(task, feats, range(i, min(i + 64, len(feats))))
            preds += model(ids, (ids != 0).long(), tt).argmax(-1).tolist()
        gold = [f[2] for f in feats]
        out = {"n": len(gold), "accuracy": M.accuracy(preds, gold)}
        if task == "mrpc":
            out["f1"] = M.binary_f1(preds, gold)
        return out
    if task == "conll03":
        sents = D.read_conll("test")[lim]
        gold, pred = [], []
        for words, tags in sents:
            ids, offs, word_of, first = ner_encode(words, 512)
            x = torch.tensor([ids])
            lab = model(x, torch.ones_like(x), torch.zeros_like(x))[0].argmax(-1).tolist()
            # HF "first" aggregation: one tag per pipeline word (first subword), then group
            ws = [(offs[k][0], offs[k][1], D.NER_LABELS[lab[k]]) for k in range(len(ids)) if first[k]]
            ends = {}
            for k in range(len(ids)):  # extend each word over its "##" continuation pieces
                if word_of[k] >= 0:
                    ends[k] = offs[k][1]
            words_spans = []
            cur = None
            for k in range(1, len(ids) - 1):
                if first[k]:
                    if cur:
                        words_spans.append(cur)
                    cur = [offs[k][0], offs[k][1], D.NER_LABELS[lab[k]]]
                else:
                    cur[1] = offs[k][1]
            if cur:
                words_spans.append(cur)
            ents = M.group_entities(words_spans)
            _, spans = ner_words(words)
            pred.append(M.char_entities_to_word_spans(ents, spans))
            gold.append(M.bio_spans(tags))
        out = M.entity_prf(pred, gold)
        out["n"] = len(sents)
        return out
    if task == "squad":
        exs = D.read_squad("eval")[lim]
        em = f1 = 0.0
        for ex in exs:
            ans = qa_predict(model, ex["question"], ex["context"])
            em += M.squad_em(ans, ex["answers"])
            f1 += M.squad_f1(ans, ex["answers"])
        return {"n": len(exs), "exact_match": em / len(exs), "f1": f1 / len(exs)}
    if task == "codah":
        feats = codah_features("eval", 512)[lim]
        preds = []
        for i in range(0, len(feats), 32):
            ids, tt, _ = collate(task, feats, range(i, min(i + 32, len(feats))))
            preds += model(ids, (ids != 0).long(), tt).argmax(-1).tolist()
        return {"n": len(feats), "accuracy": M.accuracy(preds, [f[2] for f in feats])}
    if task == "mlm":
        items = D.fill_mask_items(tok().vocab)[lim]
        hits1 = hits5 = 0
        for text, target in items:
            ids = [101] + ids_of(text)[:510] + [102]
            x = torch.tensor([ids])
            pos = ids.index(103)
            logits = model(x, torch.ones_like(x), torch.zeros_like(x))[0, pos]
            top = logits.topk(5).indices.tolist()
            words = [tok().ids_to_tokens[i] for i in top]
            hits5 += target in words
            hits1 += target == words[0]
        return {"n": len(items), "top1": hits1 / len(items), "top5": hits5 / len(items)}
    raise ValueError(task)


def qa_predict(model, question: str, context: str, max_answer_len: int = 15, top_k: int = 1) -> str:
    """HF question-answering pipeline decoding (top_k 1, align_to_words): per window, softmax over the
    context tokens and [CLS], [CLS] zeroed, the best top_k * 2 + 10 spans (s <= e < s + 15) aligned to
    words; identical answer texts (case-insensitive) from several spans / windows add their scores."""
    answers: Dict[str, list] = {}
    order: List[str] = []
    for ids, tt, offs, cont in squad_windows(question, context):
        x = torch.tensor([ids])
        s, e = model(x, torch.ones_like(x), torch.tensor([tt]))
        s, e = s[0], e[0]
        ctx = torch.tensor([o is not None for o in offs])
        ctx[0] = True  # p_mask leaves [CLS] in the softmax; its score is zeroed after
        s = s.masked_fill(~ctx, -10000.0)
        e = e.masked_fill(~ctx, -10000.0)
        ps = torch.softmax(s, -1)
        pe = torch.softmax(e, -1)
        ps[0] = pe[0] = 0.0
        outer = ps[:, None] * pe[None, :]
        cand = torch.triu(torch.tril(outer, max_answer_len - 1)).reshape(-1)
        k = min(top_k * 2 + 10, int((cand > 0).sum()))
        vals, flat = torch.sort(cand, descending=True, stable=True)
        for score, f in zip(vals[:k].tolist(), flat[:k].tolist()):
            i, j = divmod(f, len(ids))
            if offs[i] is None or offs[j] is None:
                continue
            while cont[i] and offs[i - 1] is not None:  # align to words (pre-tokens)
                i -= 1
            while j + 1 < len(cont) and cont[j + 1]:
                j += 1
            text = context[offs[i][0]:offs[j][1]]
            key = text.lower()
            if key in answers:
                answers[key][0] += score
            else:
                answers[key] = [score, text]
                order.append(key)
    best = max(order, key=lambda key: answers[key][0], default=None)  # first of equal scores, as a stable sort
    return answers[best][1] if best is not None else ""


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


def export(task: str, args) -> None:
    import onnx
    import generate as G

    cls, kind, _, _, name = TASKS[task]
    folder = os.path.join(DEMO, name)
    os.makedirs(os.path.join(folder, "onnx"), exist_ok=True)
    src = os.path.join(run_dir(task, args), "model.pt")
    model = cls(make_config(task))
    model.load_state_dict(torch.load(src)["model"])
    model.eval()
    spec = SimpleNamespace(kind=kind, distil=False)
    fp32 = G.export_onnx(spec, model)
    fp32_path = os.path.join(folder, "onnx", "model.onnx")
    G.save_onnx(fp32, fp32_path)
    q_path = os.path.join(folder, "onnx", "model_quantized.onnx")
    how = quantize(fp32_path, q_path, fp32)
    if task == "mlm":
        G.check_tied(onnx.load(q_path), (model.config.vocab_size, model.config.hidden_size), quantized=True)
    cfg = model.config.to_hf_dict(model.architecture)
    if task in ("squad", "codah", "mlm"):
        cfg.pop("id2label")
        cfg.pop("label2id")
    G.write_json(os.path.join(folder, "config.json"), cfg)
    G.write_tokenizer_files(folder)
    with open(os.path.join(folder, ".gitignore"), "w") as f:
        f.write("# fp32 graph: reproducible with tools/train/train.py export; only int8 ships\nonnx/model.onnx\n")
    metrics = json.load(open(os.path.join(run_dir(task, args), "eval_fp32.json")))
    metrics["framework"] = "pytorch-fp32"
    metrics["quantizer"] = how
    G.write_json(os.path.join(folder, "eval_fp32.json"), metrics)
    log(f"exported {name}: int8 {os.path.getsize(q_path) / 2**20:.2f} MiB ({how}), "
        f"fp32 {os.path.getsize(fp32_path) / 2**20:.2f} MiB")


def quantize(fp32_path: str, q_path: str, fp32_model) -> str:
    """Prefer the TypeScript quantizer (src/cli/quantize.ts); fall back to tools/fixtures/quantize.py."""
    script = ("import { quantizeFile } from './src/cli/quantize.ts';"
              f"await quantizeFile({json.dumps(fp32_path)}, {json.dumps(q_path)});")
    try:
        subprocess.run(["node", "--import", "tsx", "--input-type=module", "-e", script], cwd=REPO, check=True,
                       capture_output=True, timeout=300)
        return "src/cli/quantize.ts"
    except Exception as err:  # noqa: BLE001
        log(f"TypeScript quantizer failed ({err}); using tools/fixtures/quantize.py")
        from quantize import quantize_dynamic
        import generate as G
        G.save_onnx(quantize_dynamic(fp32_model, "int8"), q_path)
        return "tools/fixtures/quantize.py"


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

DEFAULTS = {  # per task: (epochs, batch, lr, max_len)
    "mlm": dict(epochs=3, batch_size=64, lr=1e-3, max_len=128, warmup_ratio=0.06),
    "sst2": dict(epochs=1, batch_size=32, lr=2e-4, max_len=128, warmup_ratio=0.06),
    "mrpc": dict(epochs=4, batch_size=32, lr=1e-4, max_len=128, warmup_ratio=0.1),
    "conll03": dict(epochs=3, batch_size=32, lr=3e-4, max_len=128, warmup_ratio=0.06),
    "squad": dict(epochs=2, batch_size=16, lr=3e-4, max_len=384, warmup_ratio=0.1),
    "codah": dict(epochs=3, batch_size=16, lr=1e-4, max_len=64, warmup_ratio=0.1),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["mlm", "finetune", "export", "eval"])
    ap.add_argument("--task", choices=list(TASKS), default=None)
    ap.add_argument("--epochs", type=float)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=18.0, help="stop training after this wall time")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="stop at this step without changing the schedule (replays a run cut by --max-minutes)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--max-len", type=int)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--schedule", choices=SCHEDULES, default="linear")
    ap.add_argument("--warmup-steps", type=int, default=None)
    ap.add_argument("--warmup-ratio", type=float)
    ap.add_argument("--num-cycles", type=float, default=None, help="cosine (0.5) / cosine_with_restarts (1)")
    ap.add_argument("--lr-end", type=float, default=1e-7, help="polynomial")
    ap.add_argument("--power", type=float, default=1.0, help="polynomial")
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", default=None, help="encoder checkpoint (default runs/mlm/model.pt)")
    ap.add_argument("--no-pretrained", action="store_true")
    ap.add_argument("--run-name", default=None)
    ap.add_argument("--conll-valid", action="store_true", help="conll03: also train on valid.txt (testa)")
    ap.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N held-out examples only")
    args = ap.parse_args(argv)
    task = "mlm" if args.command == "mlm" else args.task
    if task is None:
        ap.error("--task is required")
    for k, v in DEFAULTS[task].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    torch.set_num_threads(args.threads)
    if args.command in ("mlm", "finetune"):
        train(task, args)
    elif args.command == "export":
        export(task, args)
    else:
        model = TASKS[task][0](make_config(task))
        model.load_state_dict(torch.load(os.path.join(run_dir(task, args), "model.pt"))["model"])
        metrics = evaluate(task, model.eval(), args.eval_limit)
        print(json.dumps(metrics))
        path = os.path.join(run_dir(task, args), "eval_fp32.json")
        if args.eval_limit is None and os.path.exists(path):  # refresh the metrics, keep the training facts
            old = json.load(open(path))
            old.update(metrics)
            json.dump(old, open(path, "w"), indent=1)


if __name__ == "__main__":
    main()
