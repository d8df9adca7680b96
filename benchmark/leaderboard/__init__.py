"""Leaderboards: result records -> tidy tables, seed aggregates, markdown, CSVs and plots.

``build_leaderboard(folders, out, command)`` is ``npas leaderboard``: ``collect`` (which records count
and a note for each that does not), ``tidy`` (a row per run and scored entity), ``aggregate`` (cells
over seeds, paired differences to the unshared network, flags), ``render`` (markdown), ``plots`` and
``curves`` (training curves from each run's metrics.jsonl).
``frame``/``to_markdown`` are the flat table of ``npas demo``.
"""

from .build import Leaderboard, board_summary, build_leaderboard
from .collect import Collection, Note, collect
from .table import frame, row, to_markdown

__all__ = ["Leaderboard", "board_summary", "build_leaderboard", "Collection", "Note", "collect", "frame", "row",
           "to_markdown"]
