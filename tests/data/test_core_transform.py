import numpy as np
import pytest

from mammolens.data.heatmap_io import heatmap_kinds, load_heatmap, save_heatmaps
from mammolens.data.transform import Transform


def _tf(flipped):
    # 300x200 original, crop rows 20..280 and cols 50..200, scale 0.5, pad into 160x100
    return Transform(300, 200, 20, 280, 50, 200, flipped, 0.5, 160, 100, pad_top=0, pad_left=0)


@pytest.mark.parametrize("flipped", [False, True])
def test_points_round_trip(flipped):
    tf = _tf(flipped)
    pts = np.array([[60.0, 30.0], [199.0, 279.0], [125.5, 150.25]])
    back = tf.inverse_points(tf.forward_points(pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_forward_points_known_values():
    tf = _tf(True)
    # x: 60 -> 10 in crop -> flipped 150-10=140 -> *75/150 = 70 ; y: 30 -> 10 -> 5
    np.testing.assert_allclose(tf.forward_points([[60, 30]]), [[70.0, 5.0]])
    assert tf.resized_h == 130 and tf.resized_w == 75


@pytest.mark.parametrize("flipped", [False, True])
def test_array_warp_puts_blob_back_in_place(flipped):
    tf = _tf(flipped)
    orig = np.zeros((300, 200), np.float32)
    orig[100:120, 150:170] = 1.0
    cache = tf.forward_array(orig)
    assert cache.shape == (160, 100)
    assert cache[130:, :].max() == 0 and cache[:, 75:].max() == 0  # padding stays empty
    back = tf.inverse_array(cache)
    assert back.shape == (300, 200)
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert 100 <= y < 120 and 150 <= x < 170
    assert back[:20].max() == 0 and back[:, :50].max() == 0  # outside the crop


@pytest.mark.parametrize("flipped", [False, True])
def test_inverse_onto_a_shrunk_original_equals_inverse_then_shrink(flipped):
    import cv2

    tf = _tf(flipped)
    orig = np.zeros((300, 200), np.float32)
    orig[100:140, 150:180] = 1.0
    cache = tf.forward_array(orig)
    direct = tf.inverse_array(cache, shape=(150, 100))
    via_full = cv2.resize(tf.inverse_array(cache), (100, 150), interpolation=cv2.INTER_AREA)
    assert direct.shape == (150, 100)
    assert np.abs(direct - via_full).mean() < 0.02
    y, x = np.unravel_index(np.argmax(direct), direct.shape)
    assert 50 <= y < 70 and 75 <= x < 90  # the blob, at half scale
    assert direct[:10].max() == 0 and direct[:, :25].max() == 0  # outside the crop, scaled
    np.testing.assert_array_equal(tf.inverse_array(cache, shape=(300, 200)), tf.inverse_array(cache))


def test_json_round_trip_and_shape_checks():
    tf = _tf(True)
    assert Transform.from_json(tf.to_json()) == tf
    with pytest.raises(ValueError, match="original shape"):
        tf.forward_array(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="cache shape"):
        tf.inverse_array(np.zeros((10, 10)))


def test_heatmap_files(tmp_path):
    tf = _tf(False)
    hm = np.zeros((160, 100), np.float32)
    hm[40, 30] = 1.0
    p = save_heatmaps(tmp_path / "a.npz", {"attention": hm, "localization": hm * 0.5}, tf)
    assert heatmap_kinds(p) == ["attention", "localization"]
    cache, tf2 = load_heatmap(p, "attention", geometry="cache")
    assert tf2 == tf and cache[40, 30] == 1.0
    orig, _ = load_heatmap(p, "localization")
    assert orig.shape == (300, 200)
    y, x = np.unravel_index(np.argmax(orig), orig.shape)
    assert abs(y - (20 + 40.5 * 2)) <= 2 and abs(x - (50 + 30.5 * 2)) <= 2
    with pytest.raises(KeyError, match="gradcam"):
        load_heatmap(p, "gradcam")
    with pytest.raises(ValueError, match="shape"):
        save_heatmaps(tmp_path / "b.npz", {"attention": np.zeros((5, 5))}, tf)
