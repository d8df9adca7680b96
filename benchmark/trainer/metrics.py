"""Evaluation metrics (top-1/top-5 per member and for the ensemble) and the JSON-lines log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Protocol

import torch
import torch.nn.functional as F

from ..atomic import dumps
from ..contract import MAX_MEMBERS
from .distributed import DistInfo, all_reduce_sum


class TopK:
    """Accumulates correct-at-1/5 counts for every member and the ensemble (mean of softmax)."""

    def __init__(self, members: int, device: torch.device) -> None:
        self.members = members
        # rows: members..., ensemble; cols: top1, top5, loss_sum
        self.sums = torch.zeros(members + 1, 3, dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        # logits: (M, B, C)
        logits = logits.float()
        probs = logits.softmax(-1)
        ens = probs.mean(0)
        rows = [*logits.unbind(0), ens.log()]
        k = min(5, logits.shape[-1])
        for i, row in enumerate(rows):
            top = row.topk(k, dim=-1).indices
            hit = top.eq(target[:, None])
            self.sums[i, 0] += hit[:, 0].sum()
            self.sums[i, 1] += hit.any(-1).sum()
            self.sums[i, 2] += F.nll_loss(row.log_softmax(-1), target, reduction="sum")
        self.count += target.numel()

    def compute(self, info: DistInfo, names: list[str]) -> dict[str, Any]:
        sums = all_reduce_sum(self.sums.clone(), info)
        count = all_reduce_sum(self.count.clone(), info).item()
        frac = (sums / max(count, 1)).tolist()
        out: dict[str, Any] = {"examples": int(count)}
        members = [{"name": n, "top1": 100 * frac[i][0], "top5": 100 * frac[i][1], "loss": frac[i][2]}
                   for i, n in enumerate(names)]
        if self.members == 1:
            out.update(top1=members[0]["top1"], top5=members[0]["top5"], loss=members[0]["loss"])
        else:
            e = frac[-1]
            out.update(top1=100 * e[0], top5=100 * e[1], loss=e[2])
            out["members"] = members
        return out


class LineListener(Protocol):
    """Told of every line a ``JsonLines`` writes and of every truncation (``tensorboard.EventLog``)."""

    def write(self, record: dict[str, Any]) -> None: ...

    def reset(self, kept: list[dict[str, Any]]) -> None: ...


class JsonLines:
    """Append-only metrics log; ``truncate(n)`` drops lines written after a checkpoint on resume.

    ``listener`` (e.g. the TensorBoard event log) gets each line before it is appended, and the lines
    kept after each truncation."""

    def __init__(self, path: Path, enabled: bool = True, listener: LineListener | None = None) -> None:
        self.path = path
        self.enabled = enabled
        self.listener = listener if enabled else None
        self.lines = 0
        if enabled and path.exists():
            with path.open("rb") as fh:  # bytes: a line of foreign, non-UTF-8 bytes still counts as one
                self.lines = sum(1 for _ in fh)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.listener is not None:
            self.listener.write(record)
        try:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(dumps(record) + "\n")  # NaN/Infinity -> null: valid JSON for every reader
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # a partial last line is dropped on resume (truncate to the checkpoint's count)
            from ..storage import storage_error

            raise storage_error(exc, "append to", self.path) from None
        self.lines += 1

    def truncate(self, keep: int) -> None:
        if not self.enabled or not self.path.exists():
            self.lines = 0
            if self.listener is not None:
                self.listener.reset([])
            return
        kept = self.path.read_bytes().splitlines(keepends=True)[:keep]
        from ..atomic import write_bytes

        write_bytes(self.path, b"".join(kept))
        self.lines = len(kept)
        if self.listener is not None:
            self.listener.reset([r for r in (_parse(k.decode("utf-8", errors="replace")) for k in kept) if r is not None])


def _parse(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a metrics log that is a JSON object (a torn, foreign or non-UTF-8 line is skipped)."""
    from ..reading import LOG_CAP, read_capped

    text = read_capped(path, LOG_CAP).decode("utf-8", errors="replace")
    return [r for r in map(_parse, text.splitlines()) if r is not None]


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else float("nan")


class AnytimeMeter:
    """Anytime prediction: accuracy of every non-empty subset of ensemble members.

    A subset predicts with the mean of its members' softmax outputs; its cost is the sum of its
    members' inference FLOPs. ``frontier`` marks the subsets no cheaper subset beats, i.e. the
    accuracy-vs-FLOPs curve of the ensemble (SuperWeight paper, Sec. 4.3; also used for the
    full-parameter ensemble baselines so the two compare row by row).
    """

    def __init__(self, members: int, device: torch.device, max_members: int = MAX_MEMBERS) -> None:
        if members > max_members:
            raise ValueError(f"anytime evaluation of {members} members would need {2 ** members - 1} subsets")
        self.subsets = [tuple(i for i in range(members) if mask >> i & 1) for mask in range(1, 2 ** members)]
        index = torch.zeros(len(self.subsets), members)
        for row, s in enumerate(self.subsets):
            index[row, list(s)] = 1.0 / len(s)
        self.weights = index.to(device)  # (S, M): mean over the subset's members
        self.correct = torch.zeros(len(self.subsets), 2, dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        probs = logits.float().softmax(-1)  # (M, B, C)
        mixed = torch.einsum("sm,mbc->sbc", self.weights, probs)  # (S, B, C)
        k = min(5, mixed.shape[-1])
        hit = mixed.topk(k, dim=-1).indices.eq(target[None, :, None])  # (S, B, k)
        self.correct[:, 0] += hit[..., 0].sum(1)
        self.correct[:, 1] += hit.any(-1).sum(1)
        self.count += target.numel()

    def compute(self, info: DistInfo, names: list[str], flops: list[int]) -> list[dict[str, Any]]:
        correct = all_reduce_sum(self.correct.clone(), info)
        count = max(all_reduce_sum(self.count.clone(), info).item(), 1)
        rows = []
        for s, (c1, c5) in zip(self.subsets, (correct / count).tolist()):
            rows.append({"members": [names[i] for i in s], "flops": int(sum(flops[i] for i in s)),
                         "top1": 100 * c1, "top5": 100 * c5})
        rows.sort(key=lambda r: (r["flops"], -r["top1"]))
        best = -1.0
        for r in rows:
            r["frontier"] = r["top1"] > best
            best = max(best, r["top1"])
        return rows
