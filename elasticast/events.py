"""Sound events from window scores: thresholds (single or hysteresis), gap merging, minimum durations, label lists.

One module serves every entry point (`ElasticASTClassifier`, `elasticast classify`, the web app, the ONNX runtime,
`elasticast evaluate-events`), so an event means the same everywhere. It needs only numpy.

Time placement: each window speaks for the stretch around its centre, from halfway to the previous window to
halfway to the next one (`window_cores`). With a hop `h` shorter than the window, that is `[centre - h/2,
centre + h/2]`: the middle of the overlap, equal to the midpoint between the two windows' centres. Without overlap
it is the window itself. The first window's stretch starts at its start (the recording's start), the last one's
ends at its end. An event's onset is the start of the stretch of its first active window and its offset the end of
the stretch of its last one, so the time resolution of onsets and offsets is the hop.

Decisions, per label (multi-label models):
    - single threshold: a window is active when its score ≥ `threshold` (per class, e.g. calibrated);
    - hysteresis (`low_threshold` given): an event starts where the score reaches `threshold` and goes on, forwards
      and backwards, while it stays ≥ `low_threshold` (fewer broken events at a strict onset threshold).
Single-label models: each window takes its top label; a window whose top score is below `min_confidence` is
`unknown_label` ("unknown"); runs of equal labels are events (score: the mean top score of the run).

Then, in this order, per label: events separated by a gap shorter than `merge_gap` seconds are merged (pyannote's
`min_duration_off`), events shorter than `min_duration` seconds are dropped (`min_duration_on`), and labels not in
`labels` (a keep-list) or in `exclude` are removed. An event's score is the peak window score inside it
(multi-label) or the mean top score of its windows (single-label).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_THRESHOLD = 0.5  # multi-label threshold of an uncalibrated model
UNKNOWN_LABEL = "unknown"


@dataclass
class Event:
    """One sound event: `start`/`end` in seconds from the recording's start, its `label` and `score`."""

    start: float
    end: float
    label: str
    score: float

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class EventOptions:
    """How window scores become events (see the module docstring).

    Args:
        threshold: Onset threshold of multi-label models: one number for every class, a `{label: threshold}`
            mapping (labels missing from it get `DEFAULT_THRESHOLD`), or None for `DEFAULT_THRESHOLD`.
        low_threshold: Hysteresis offset threshold (number or mapping, ≤ the onset threshold); None: no hysteresis.
        min_confidence: Single-label models: a window whose top score is below it is `unknown_label`; None: never.
        merge_gap: Merge events of one label separated by less than this many seconds.
        min_duration: Drop events shorter than this many seconds (after merging).
        labels: Keep only these labels (None: all).
        exclude: Drop these labels.
        unknown_label: The label of windows below `min_confidence`.
    """

    threshold: float | Mapping[str, float] | None = None
    low_threshold: float | Mapping[str, float] | None = None
    min_confidence: float | None = None
    merge_gap: float = 0.0
    min_duration: float = 0.0
    labels: Sequence[str] | None = None
    exclude: Sequence[str] = field(default_factory=tuple)
    unknown_label: str = UNKNOWN_LABEL

    def __post_init__(self):
        if self.merge_gap < 0 or self.min_duration < 0:
            raise ValueError("merge_gap and min_duration are seconds ≥ 0; pass 0 to turn them off.")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence is a score in [0, 1], got {self.min_confidence}.")

    def thresholds(self, labels: Sequence[str]) -> np.ndarray:
        """Per-class onset thresholds `[num_labels]`."""
        return _per_class(self.threshold, labels, DEFAULT_THRESHOLD, "threshold")

    def low_thresholds(self, labels: Sequence[str]) -> np.ndarray:
        """Per-class offset thresholds `[num_labels]` (the onset thresholds without hysteresis)."""
        high = self.thresholds(labels)
        if self.low_threshold is None:
            return high
        low = _per_class(self.low_threshold, labels, DEFAULT_THRESHOLD, "low_threshold")
        if (low > high).any():
            bad = [label for label, lo, hi in zip(labels, low, high) if lo > hi]
            raise ValueError(f"low_threshold exceeds the threshold for {bad}: the hysteresis offset threshold must be "
                             "at most the onset threshold; lower it.")
        return low

    def check_labels(self, labels: Sequence[str]) -> None:
        """Raises a ValueError naming `labels`/`exclude` entries the model does not know (a typo keeps nothing)."""
        known = set(labels) | {self.unknown_label}
        unknown = [name for name in [*(self.labels or []), *self.exclude] if name not in known]
        if unknown:
            raise ValueError(f"Unknown label(s) {unknown} in the keep/exclude lists; the model's labels are "
                             f"{list(labels)}.")

    def describe(self, labels: Sequence[str], multi_label: bool) -> dict:
        """The settings as JSON-ready provenance."""
        out = {"merge_gap": self.merge_gap, "min_duration": self.min_duration,
               "labels": list(self.labels) if self.labels is not None else None, "exclude": list(self.exclude)}
        if multi_label:
            out["thresholds"] = dict(zip(labels, self.thresholds(labels).round(6).tolist()))
            if self.low_threshold is not None:
                out["low_thresholds"] = dict(zip(labels, self.low_thresholds(labels).round(6).tolist()))
        else:
            out["min_confidence"] = self.min_confidence
        return out


def _per_class(value, labels: Sequence[str], default: float, name: str) -> np.ndarray:
    if value is None:
        return np.full(len(labels), default)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(labels))
        if unknown:
            raise ValueError(f"{name} names labels the model does not have: {unknown}; its labels are {list(labels)}.")
        return np.array([float(value.get(label, default)) for label in labels])
    return np.full(len(labels), float(value))


def window_cores(starts: Sequence[float], ends: Sequence[float]) -> np.ndarray:
    """The stretch each window speaks for (see the module docstring): `[W]` starts and ends (s) → `[W, 2]`."""
    starts, ends = np.asarray(starts, dtype=float), np.asarray(ends, dtype=float)
    cores = np.stack([starts, ends], axis=1) if len(starts) else np.zeros((0, 2))
    if len(starts) > 1:
        middle = (ends[:-1] + starts[1:]) / 2
        cores[1:, 0] = middle
        cores[:-1, 1] = middle
    return cores


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges `[first, last]` of the True runs of a boolean vector `[W]`."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def _hysteresis(score: np.ndarray, high: float, low: float) -> np.ndarray:
    """Windows `[W]` in a run ≥ `low` that holds at least one window ≥ `high`."""
    active = np.zeros(len(score), dtype=bool)
    for first, last in _runs(score >= low):
        if (score[first : last + 1] >= high).any():
            active[first : last + 1] = True
    return active


def _merge_and_filter(events: list[tuple[Event, int]], options: EventOptions, peak: bool) -> list[Event]:
    """One label's `(event, number of windows)` in time order → merged across gaps < merge_gap (score: the peak, or
    the window-weighted mean for single-label runs), then those lasting ≥ min_duration."""
    merged: list[tuple[Event, int]] = []
    for event, count in events:
        if merged and event.start - merged[-1][0].end < options.merge_gap:
            last, last_count = merged[-1]
            score = max(last.score, event.score) if peak else \
                (last.score * last_count + event.score * count) / (last_count + count)
            merged[-1] = (Event(last.start, max(last.end, event.end), last.label, score), last_count + count)
        else:
            merged.append((event, count))
    return [event for event, _ in merged if event.end - event.start >= options.min_duration - 1e-9]


def detect_events(starts: Sequence[float], ends: Sequence[float], scores, labels: Sequence[str], multi_label: bool,
                  options: EventOptions | None = None) -> list[Event]:
    """Window scores → events, sorted by onset then label.

    Args:
        starts, ends: Window starts and ends in seconds, `[W]`, in time order.
        scores: Window scores `[W, num_labels]` (sigmoid for multi-label models, softmax otherwise).
        labels: Class names `[num_labels]`.
        multi_label: Per-class thresholds (True) or the top label per window (False).
        options: Thresholds and post-processing; default `EventOptions()`.
    """
    options = options or EventOptions()
    scores = np.asarray(scores, dtype=float).reshape(len(starts), len(labels))
    options.check_labels(labels)
    if not len(starts):
        return []
    cores = window_cores(starts, ends)
    events: list[Event] = []
    if multi_label:
        high, low = options.thresholds(labels), options.low_thresholds(labels)
        for k, label in enumerate(labels):
            active = _hysteresis(scores[:, k], high[k], low[k])
            found = [(Event(float(cores[a, 0]), float(cores[b, 1]), label, float(scores[a : b + 1, k].max())),
                      b - a + 1) for a, b in _runs(active)]
            events += _merge_and_filter(found, options, peak=True)
    else:
        top, top_score = scores.argmax(1), scores.max(1)
        names = np.array([*labels, options.unknown_label], dtype=object)
        if options.min_confidence is not None:
            top = np.where(top_score < options.min_confidence, len(labels), top)
        per_label: dict[str, list[tuple[Event, int]]] = {}
        start = 0
        for index in range(1, len(top) + 1):
            if index == len(top) or top[index] != top[start]:
                label = str(names[top[start]])
                event = Event(float(cores[start, 0]), float(cores[index - 1, 1]), label,
                              float(top_score[start:index].mean()))
                per_label.setdefault(label, []).append((event, index - start))
                start = index
        for found in per_label.values():
            events += _merge_and_filter(found, options, peak=False)
    keep = set(options.labels) if options.labels is not None else None
    events = [e for e in events if (keep is None or e.label in keep) and e.label not in set(options.exclude)]
    return sorted(events, key=lambda e: (e.start, e.label))


class EventTracker:
    """Events of a live stream as they close (`elasticast listen`): windows arrive one at a time in time order;
    `add` returns the events that no later window can change, `close` the rest at the end of the stream. The events
    are those `detect_events` finds over all the windows (same options, same placement).

    An event is closed once it ends at least `merge_gap` before the earliest time a later event of its label can
    start (`_frontiers`): a later window can then neither extend it nor merge another event into it. Only the
    windows from the earliest open event or frontier on (and one before, for its stretch) are kept.
    """

    def __init__(self, labels: Sequence[str], multi_label: bool, options: EventOptions | None = None):
        self.labels, self.multi_label = list(labels), multi_label
        self.options = options or EventOptions()
        self.options.check_labels(self.labels)
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._scores: list[np.ndarray] = []
        self._emitted: set[tuple[str, float]] = set()  # (label, end) of events already returned

    def _events(self) -> list[Event]:
        return detect_events(self._starts, self._ends, np.stack(self._scores), self.labels, self.multi_label,
                             self.options)

    def _frontiers(self, cores: np.ndarray) -> dict[str, float]:
        """Per label, the earliest time a future (or still growing) event of that label can start: the start of the
        trailing run of windows that a later window could still join — scores ≥ the offset threshold (multi-label,
        where hysteresis extends an event backwards), or the newest window's top label (single-label) — else the
        newest window's stretch."""
        boundary = float(cores[-1, 0])
        scores = np.stack(self._scores)
        frontiers = dict.fromkeys([*self.labels, self.options.unknown_label], boundary)
        if self.multi_label:
            trailing = scores >= self.options.low_thresholds(self.labels)  # [W, num_labels]
            names = self.labels
        else:
            top = scores.argmax(1)
            if self.options.min_confidence is not None:
                top = np.where(scores.max(1) < self.options.min_confidence, len(self.labels), top)
            trailing = (top[:, None] == top[-1]) & (np.arange(len(self.labels) + 1) == top[-1])
            names = [*self.labels, self.options.unknown_label]
        for k, label in enumerate(names):
            first = len(trailing)
            while first > 0 and trailing[first - 1, k]:
                first -= 1
            if first < len(trailing):
                frontiers[label] = float(cores[first, 0])
        return frontiers

    def add(self, start: float, end: float, scores) -> list[Event]:
        """One more window (`start`/`end` in seconds, `scores [num_labels]`) → the events it closes."""
        self._starts.append(float(start))
        self._ends.append(float(end))
        self._scores.append(np.asarray(scores, dtype=float))
        if len(self._starts) < 2:
            return []
        gap = self.options.merge_gap
        cores = window_cores(self._starts, self._ends)
        frontiers = self._frontiers(cores)
        events = self._events()
        closed = [e for e in events if e.end <= frontiers[e.label] - gap]
        fresh = [e for e in closed if (e.label, round(e.end, 6)) not in self._emitted]
        self._emitted.update((e.label, round(e.end, 6)) for e in fresh)
        keep_from = min([*frontiers.values(), *(e.start for e in events if e.end > frontiers[e.label] - gap)]) - gap
        drop = max(0, int(np.searchsorted(np.asarray(self._ends), keep_from, side="left")) - 1)
        if drop:  # windows that ended before anything still open: forget them (and what was emitted from them)
            del self._starts[:drop], self._ends[:drop], self._scores[:drop]
            self._emitted = {key for key in self._emitted if key[1] > self._starts[0]}
        return fresh

    def close(self) -> list[Event]:
        """The end of the stream: the events not returned yet."""
        if not self._starts:
            return []
        fresh = [e for e in self._events() if (e.label, round(e.end, 6)) not in self._emitted]
        self._starts, self._ends, self._scores, self._emitted = [], [], [], set()
        return fresh


def model_event_options(config, **overrides) -> EventOptions:
    """`EventOptions` with a model's calibrated defaults (`config.class_thresholds`, `config.min_confidence`, see
    `elasticast calibrate`); keyword arguments that are not None override them (`threshold=0.3` for every class)."""
    defaults = {"threshold": getattr(config, "class_thresholds", None) or None,
                "min_confidence": getattr(config, "min_confidence", None)}
    given = {k: v for k, v in overrides.items() if v is not None}
    return EventOptions(**{**defaults, **given})


def add_event_arguments(parser, *, thresholds: bool = True) -> None:
    """The event options as command-line flags (`elasticast classify`, `evaluate-events`, ...); read them back with
    `event_options_from_args(args, config)`."""
    # Imported here: this module is also shipped alone beside ONNX exports (as elasticast_events.py), without it.
    from .argument_types import non_negative, score

    group = parser.add_argument_group("sound events (see elasticast.events)")
    if thresholds:
        group.add_argument("--threshold", type=score("--threshold"), default=None,
                           help="multi-label: one threshold for every class (default: the model's calibrated "
                                f"per-class thresholds, else {DEFAULT_THRESHOLD})")
        group.add_argument("--low-threshold", type=score("--low-threshold"), default=None,
                           help="multi-label hysteresis: events continue while the score stays above this")
        group.add_argument("--min-confidence", type=score("--min-confidence"), default=None,
                           help="single-label: windows whose top score is below it are 'unknown' (default: the "
                                "model's calibrated value, else none)")
    group.add_argument("--merge-gap", type=non_negative("--merge-gap"), default=0.0,
                       help="merge events of a label closer than this (s)")
    group.add_argument("--min-duration", type=non_negative("--min-duration"), default=0.0,
                       help="drop events shorter than this (s)")
    group.add_argument("--labels", type=_names, default=None, help="comma-separated labels to keep (default: all)")
    group.add_argument("--exclude", type=_names, default=(), help="comma-separated labels to drop")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def event_options_from_args(args, config) -> EventOptions:
    """The `add_event_arguments` flags → `EventOptions` over the model's calibrated defaults."""
    return model_event_options(
        config, threshold=getattr(args, "threshold", None), low_threshold=getattr(args, "low_threshold", None),
        min_confidence=getattr(args, "min_confidence", None), merge_gap=args.merge_gap,
        min_duration=args.min_duration, labels=args.labels, exclude=tuple(args.exclude),
    )


__all__ = [
    "DEFAULT_THRESHOLD",
    "Event",
    "EventOptions",
    "EventTracker",
    "add_event_arguments",
    "detect_events",
    "event_options_from_args",
    "model_event_options",
    "window_cores",
]
