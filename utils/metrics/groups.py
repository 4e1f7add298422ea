"""Building metrics per tile and per group of tiles (an Inria city), pooled from pixel counts.

Papers on the Inria aerial benchmark and its leaderboard report IoU and accuracy per city and
overall, each pooled over the pixels of the tiles concerned (not a mean of per-tile scores).
:class:`TileScores` sums the level-128 confusion counts (TP, FP, FN, TN of
:class:`~utils.metrics.binary.BinaryAccumulator`) of every image into its tile and reports, for
every tile and every group, the pooled ``IoU``, ``F1``, ``precision``, ``recall`` and
``accuracy`` as ``"<metric>/<tile or group>"`` (e.g. ``IoU/austin``, ``IoU/austin3``). Summed over
all tiles the counts are those of the dataset, so the pooled values equal the validation's
``IoU``, ``F1``, ... (no torch here).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence

import numpy as np

from utils.metrics.binary import SCORES, binary_scores

INRIA_TILE = re.compile(r"^(?P<city>.*?)(?P<number>\d+)$")
"""An Inria tile name: the city, then the tile number (``austin12``, ``kitsap-w3``)."""


INRIA_CITIES = frozenset(
    {
        *("austin", "chicago", "kitsap", "tyrol-w", "vienna"),  # training tiles, with ground truth
        *("bellingham", "bloomington", "innsbruck", "sfo", "tyrol-e"),  # test tiles
    }
)
"""The cities of the Inria aerial image labeling dataset (Maggiori et al., IGARSS 2017)."""

GROUPINGS = ("auto", "city", "folder", "none")
"""How :func:`tile_groups` groups files: by Inria city, by folder, not at all, or ``auto``."""


def inria_city(tile: str) -> str | None:
    """The city of an Inria tile name (``austin12`` -> ``austin``), None for another name."""
    found = INRIA_TILE.match(tile)
    return found["city"] if found and found["city"] else None


def tile_groups(names: Sequence[str], grouping: str = "auto") -> list[str | None] | None:
    """The group of each file for per-group scores, or None for no per-tile scores at all.

    ``names``: paths relative to the ground-truth folder, posix, without extension (the tile
    names); ``grouping``: ``city`` (the Inria city of the file name; ValueError naming a file
    that has none), ``folder`` (the relative folder, ``.`` at the top), ``none``, or ``auto``:
    ``city`` when every file is an Inria tile (:data:`INRIA_CITIES`), else ``none`` (SOD
    datasets in sub-folders get no per-image keys unless asked). Raises ValueError for another
    ``grouping``.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    cities = [inria_city(name.rsplit("/", 1)[-1]) for name in names]
    folders = [name.rsplit("/", 1)[0] if "/" in name else "." for name in names]
    if grouping == "auto":
        inria = bool(names) and all(city in INRIA_CITIES for city in cities)
        grouping = "city" if inria else "none"
    if grouping == "none":
        return None
    if grouping == "folder":
        return list(folders)
    missing = [name for name, city in zip(names, cities, strict=True) if city is None]
    if missing:
        raise ValueError(f"{missing[0]!r} is not an Inria tile name like austin12: no city")
    return list(cities)


class TileScores:
    """Pixel counts per tile, and the binary metrics per tile and per group.

    ``tiles``: the tile names (index ``i`` is tile ``i``); ``groups``: the group of each tile
    (e.g. its city), or None for tiles in no group. Raises ValueError for unequal lengths or a
    tile name that is also a group name.
    """

    def __init__(self, tiles: Sequence[str], groups: Sequence[str | None]) -> None:
        if len(tiles) != len(groups):
            raise ValueError(f"{len(tiles)} tiles but {len(groups)} groups")
        clash = set(tiles) & {group for group in groups if group is not None}
        if clash:
            raise ValueError(f"{sorted(clash)[0]!r} is both a tile and a group name")
        self.tiles = list(tiles)
        self.groups = list(groups)
        self.confusion = np.zeros((len(tiles), 4), np.float64)  # TP, FP, FN, TN per tile

    def add(self, tile_ids: np.ndarray, confusion: np.ndarray) -> None:
        """Add the per-image ``confusion`` (B x 4: TP, FP, FN, TN) of images of ``tile_ids``
        (B ints)."""
        np.add.at(self.confusion, np.asarray(tile_ids, np.int64), confusion)

    def state_arrays(self) -> list[np.ndarray]:
        """The live state (the per-tile counts), to be summed over processes in place."""
        return [self.confusion]

    def group_names(self) -> list[str]:
        """The groups, in the order of their first tile."""
        return list(dict.fromkeys(group for group in self.groups if group is not None))

    def compute(self) -> dict[str, float]:
        """``"<metric>/<group>"`` for every group, then ``"<metric>/<tile>"`` for every tile with
        pixels, metric by metric in :data:`~utils.metrics.binary.SCORES` order."""
        counts: dict[str, np.ndarray] = {}
        groups = np.array([group or "" for group in self.groups])
        for group in self.group_names():
            counts[group] = self.confusion[groups == group].sum(axis=0)
        for tile, row in zip(self.tiles, self.confusion, strict=True):
            if row.sum() > 0:
                counts[tile] = row
        scores = {where: binary_scores(total) for where, total in counts.items()}
        return {
            f"{metric}/{where}": float(values[m])
            for m, metric in enumerate(SCORES)
            for where, values in scores.items()
        }

    def table(self) -> str:
        """The per-group metrics and the pooled row (``all``) as a text table
        (:func:`format_group_table`); empty without groups."""
        names = self.group_names()
        if not names:
            return ""
        groups = np.array([group or "" for group in self.groups])
        rows = {name: binary_scores(self.confusion[groups == name].sum(axis=0)) for name in names}
        rows["all"] = binary_scores(self.confusion.sum(axis=0))
        return format_group_table(rows)


def format_group_table(rows: dict[str, Sequence[float]]) -> str:
    """``{row name: the SCORES values}`` as a text table, one row per group."""
    width = max(len(name) for name in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{metric:>9}" for metric in SCORES)]
    lines += [
        f"{name:<{width}}  " + "  ".join(f"{value:>9.4f}" for value in values)
        for name, values in rows.items()
    ]
    return "\n".join(lines)


def base_metric(name: str) -> str:
    """The metric a per-tile or per-group name reports (``IoU/austin`` -> ``IoU``); other names
    are returned as they are."""
    head, _, tail = name.partition("/")
    return head if tail and head in SCORES else name


class WithGroups(Mapping[str, bool]):
    """Metric directions (``{name: higher is better}``) that also hold the per-tile and per-group
    names ``"<binary metric>/<tile or group>"`` (:class:`TileScores`): those of ``places`` (tile
    and group names), or any such name when ``places`` is None (before the data is known, e.g.
    to check a config). Iterates over the plain names and, with ``places``, the ``IoU``,
    ``F1``, ... of each of ``groups`` (the tiles are too many to list)."""

    def __init__(
        self,
        directions: Mapping[str, bool],
        places: Collection[str] | None = None,
        groups: Sequence[str] = (),
    ) -> None:
        self._directions = directions
        self._places = None if places is None else frozenset(places)
        self._listed = [f"{metric}/{group}" for group in groups for metric in SCORES]

    def __getitem__(self, name: str) -> bool:
        if name in self._directions:
            return self._directions[name]
        metric, _, place = name.partition("/")
        if metric in SCORES and place and (self._places is None or place in self._places):
            return self._directions[metric]
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        yield from self._directions
        yield from self._listed

    def __len__(self) -> int:
        return len(self._directions) + len(self._listed)
