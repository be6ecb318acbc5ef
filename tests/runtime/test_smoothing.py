import numpy as np
import pytest

from edgefg.errors import EdgefgError
from edgefg.runtime.engine.postprocess import UNKNOWN, open_set_label, softmax, topk
from edgefg.runtime.loop.smoothing import Decider, SmoothSpec

LABELS = ["Acadian", "Least", "Willow"]


def test_softmax_topk_kept():
    p = softmax(np.array([[1.0, 3.0, 2.0]]))
    assert np.isclose(p.sum(), 1.0)
    assert topk(p, 2).tolist() == [[1, 2]]


@pytest.mark.parametrize("text,kind,value", [("ema:0.6", "ema", 0.6), ("majority:5", "majority", 5), ("none", "none", 0.0), (None, "none", 0.0)])
def test_parse(text, kind, value):
    spec = SmoothSpec.parse(text)
    assert (spec.kind, spec.value) == (kind, value)


@pytest.mark.parametrize("text", ["ema:0", "ema:1.5", "majority:0", "median:3", "ema:x"])
def test_parse_rejects(text):
    with pytest.raises(EdgefgError, match="--smooth"):
        SmoothSpec.parse(text)


def test_open_set_confidence_and_margin():
    p = np.array([0.45, 0.40, 0.15])
    assert open_set_label(p, LABELS)[0] == "Acadian"
    assert open_set_label(p, LABELS, min_confidence=0.5)[0] == UNKNOWN
    label, idx, conf, margin = open_set_label(p, LABELS, min_margin=0.1)
    assert (label, idx) == (UNKNOWN, -1) and np.isclose(margin, 0.05) and np.isclose(conf, 0.45)
    assert open_set_label(p, LABELS, min_confidence=0.4, min_margin=0.04)[0] == "Acadian"


def flicker(n=20):
    """Near-identical classes: top-1 alternates every frame, class 0 slightly ahead on average."""
    return [np.array([0.55, 0.40, 0.05]) if i % 2 == 0 else np.array([0.44, 0.51, 0.05]) for i in range(n)]


def test_ema_stops_flicker():
    raw = Decider(LABELS)
    ema = Decider(LABELS, "ema:0.3")
    raw_labels = [raw.update(p).label for p in flicker()]
    ema_labels = [ema.update(p).label for p in flicker()]
    assert len(set(raw_labels)) == 2
    assert set(ema_labels) == {"Acadian"}


def test_ema_follows_a_real_change():
    d = Decider(LABELS, "ema:0.5")
    for _ in range(5):
        d.update(np.array([0.9, 0.05, 0.05]))
    labels = [d.update(np.array([0.05, 0.05, 0.9])).label for _ in range(4)]
    assert labels[-1] == "Willow"


def test_majority_window_and_ties():
    d = Decider(LABELS, "majority:3")
    a, b = np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.8, 0.1])
    out = [d.update(p) for p in (a, b, a, b, b)]
    assert [o.label for o in out] == ["Acadian", "Least", "Acadian", "Least", "Least"]  # tie at frame 2 → most recent
    assert np.isclose(out[2].score, 2 / 3)


def test_majority_counts_unknown_votes():
    d = Decider(LABELS, "majority:3", min_confidence=0.6)
    low = np.array([0.5, 0.3, 0.2])
    hi = np.array([0.9, 0.05, 0.05])
    labels = [d.update(p).label for p in (hi, hi, low, low)]
    assert labels == ["Acadian", "Acadian", "Acadian", UNKNOWN]


def test_changed_flags_events():
    d = Decider(LABELS, "ema:0.3")
    changes = [d.update(p).changed for p in flicker(10)]
    assert changes[0] is True and not any(changes[1:])
