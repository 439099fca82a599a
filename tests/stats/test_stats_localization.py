"""Pointing game, Dice/IoU, threshold choice and FROC on small synthetic heatmaps."""

from __future__ import annotations

import numpy as np
import pytest

from mammolens.stats import (
    StatsInputError,
    choose_threshold,
    dice,
    froc,
    hit_rate,
    iou,
    local_maxima,
    pointing_hit,
)


def _mask(shape=(40, 40), box=(10, 20, 10, 20)):
    m = np.zeros(shape, dtype=np.uint8)
    m[box[0] : box[1], box[2] : box[3]] = 2
    return m


def test_pointing_game():
    m = _mask()
    h = np.zeros((40, 40))
    h[15, 15] = 1.0
    assert pointing_hit(h, m)
    h2 = np.zeros((40, 40))
    h2[35, 35] = 1.0
    assert not pointing_hit(h2, m)
    hr = hit_rate([h, h2], [m, m])
    assert hr.k == 1 and hr.n == 2 and hr.value == 0.5
    with pytest.raises(StatsInputError, match="no lesion"):
        pointing_hit(h, np.zeros((40, 40)))
    with pytest.raises(StatsInputError, match="shape"):
        pointing_hit(h, np.zeros((20, 20)))


def test_dice_and_iou_exact_values():
    m = _mask()  # 100 px
    h = np.zeros((40, 40))
    h[10:20, 15:25] = 0.9  # 100 px, overlap 50
    assert dice(h, m, threshold=0.5) == pytest.approx(0.5)
    assert iou(h, m, threshold=0.5) == pytest.approx(50 / 150)
    assert dice(np.zeros((5, 5)), np.zeros((5, 5)), threshold=0.5) == 1.0
    assert dice(h, m, threshold=0.95) == 0.0


def test_choose_threshold_prefers_the_lesion_level():
    m = _mask()
    h = np.full((40, 40), 0.3)
    h[10:20, 10:20] = 0.7
    t = choose_threshold([h], [m])
    assert 0.3 < t <= 0.7
    assert dice(h, m, threshold=t) == 1.0


def test_local_maxima_and_froc_counts():
    h = np.zeros((60, 60))
    h[15, 15] = 0.9  # on lesion 1
    h[45, 45] = 0.8  # false positive
    h[16, 40] = 0.6  # on lesion 2
    m = np.zeros((60, 60), dtype=np.uint8)
    m[10:20, 10:20] = 2
    m[10:20, 35:45] = 2
    c = local_maxima(h, min_distance=3)
    assert c.shape == (3, 3) and c[0].tolist() == [15, 15, 0.9]
    normal = np.zeros((60, 60))
    normal[30, 30] = 0.7  # FP on a normal image
    r = froc([h, normal], [m, None], fps=(0.25, 0.5, 1.0))
    assert r.n_lesions == 2 and r.n_images == 2
    # ranking: 0.9 TP, 0.8 FP, 0.7 FP, 0.6 TP
    np.testing.assert_allclose(r.fps_per_image, [0, 0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(r.sensitivity, [0, 0.5, 0.5, 0.5, 1.0])
    assert r.at_fps == {0.25: 0.5, 0.5: 0.5, 1.0: 1.0}
    assert r.cpm == pytest.approx(2 / 3)


def test_froc_candidates_and_circles():
    cands = [np.array([[10, 10, 0.9], [11, 11, 0.8], [50, 50, 0.5]])]
    r = froc(cands, [[(10, 10, 3)]], inputs="candidates", fps=(1,))
    # the second hit on the same lesion is ignored, the far one is a FP
    assert r.at_fps[1.0] == 1.0
    np.testing.assert_allclose(r.fps_per_image, [0, 0, 1])
    with pytest.raises(StatsInputError, match="no lesions"):
        froc([np.zeros((5, 5))], [None])


def test_pointing_tolerance_counts_near_misses_only():
    import numpy as np
    import pytest

    from mammolens.stats import hit_rate, pointing_hit
    from mammolens.stats._validate import StatsInputError

    mask = np.zeros((50, 50), bool)
    mask[20:25, 20:25] = True
    near = np.zeros((50, 50))
    near[20, 28] = 1.0  # 4 px right of the lesion's edge column 24
    far = np.zeros((50, 50))
    far[45, 45] = 1.0
    assert not pointing_hit(near, mask)
    assert pointing_hit(near, mask, tolerance=4.0)
    assert not pointing_hit(near, mask, tolerance=3.9)
    assert not pointing_hit(far, mask, tolerance=15.0)
    hr = hit_rate([near, far], [mask, mask], tolerance=5.0)
    assert (hr.k, hr.n) == (1, 2)
    with pytest.raises(StatsInputError, match="tolerance"):
        pointing_hit(near, mask, tolerance=-1.0)


def test_score_localization_summarises_the_per_image_metrics():
    import numpy as np

    from mammolens.stats import dice, iou, pointing_hit, score_localization

    rng = np.random.default_rng(0)
    heats, masks = [], []
    for _ in range(5):
        h = rng.random((20, 16))
        m = np.zeros((20, 16), bool)
        m[5:10, 4:9] = True
        heats.append(h)
        masks.append(m)
    res = score_localization(heats, masks, threshold=0.6, tolerance=1.0)
    d = [dice(h, m, threshold=0.6) for h, m in zip(heats, masks, strict=True)]
    assert res.n_images == 5 and res.dice_mean == pytest.approx(np.mean(d))
    assert res.dice_median == pytest.approx(np.median(d))
    assert res.iou_mean == pytest.approx(np.mean([iou(h, m, threshold=0.6) for h, m in zip(heats, masks, strict=True)]))
    assert res.hit_rate.k == sum(pointing_hit(h, m, tolerance=1.0) for h, m in zip(heats, masks, strict=True))
    assert set(res.to_dict()) >= {"hit_rate", "dice", "iou_mean", "froc", "per_image"}
    with pytest.raises(StatsInputError):
        score_localization([], [])
