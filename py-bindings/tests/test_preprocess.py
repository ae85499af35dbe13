"""kiln.Preprocess: declared at export, applied in Python by the core's code (the browser runs the same)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kiln

from image_case import PREPROCESS, image, model


def test_apply_resizes_orders_channels_and_normalises():
    img = image()
    pre = kiln.Preprocess(**PREPROCESS)
    x = pre.apply(img, size=(9, 13))  # no resize: each value is the pixel's, normalised
    assert x.shape == (1, 3, 9, 13) and x.dtype == np.float32
    mean, std = np.array(PREPROCESS["mean"]), np.array(PREPROCESS["std"])
    bgr = img[:, :, [2, 1, 0]].astype(np.float64) / 255
    want = ((bgr - mean) / std).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(x, want, atol=1e-5)
    small = pre.apply(img, size=(8, 8))
    assert small.shape == (1, 3, 8, 8)
    # RGB without the alpha channel, and gray from a 2-D image
    np.testing.assert_array_equal(pre.apply(img[:, :, :3], (8, 8)), small)
    gray = kiln.Preprocess(channels="gray", scale=1.0)
    g = gray.apply(np.full((4, 4), 100, np.uint8), (2, 2))
    np.testing.assert_allclose(g, np.full((1, 1, 2, 2), 100.0), rtol=1e-6)


def test_bilinear_resize_matches_a_hand_computed_case():
    red = np.zeros((1, 2, 4), np.uint8)
    red[0, 1, 0] = 255
    red[..., 3] = 255
    up = kiln.Preprocess(scale=1.0).apply(red, (1, 4))
    np.testing.assert_array_equal(up[0, 0, 0], [0, 63.75, 191.25, 255])


def test_export_stores_the_spec_and_from_onnx_reads_it_back(tmp_path):
    m = model()
    path = tmp_path / "m.onnx"
    m.export_onnx(path, preprocess=kiln.Preprocess(**PREPROCESS))
    meta = kiln.InferenceSession(path).metadata
    assert json.loads(meta["kiln.preprocess"])["channels"] == "bgr"
    back = kiln.Preprocess.from_onnx(path)
    assert (back.mean, back.std, back.channels) == (pytest.approx(PREPROCESS["mean"]), pytest.approx(PREPROCESS["std"]), "bgr")
    m.export_onnx(tmp_path / "plain.onnx")
    with pytest.raises(kiln.InvalidInputError, match="declares no preprocessing"):
        kiln.Preprocess.from_onnx(tmp_path / "plain.onnx")


def test_bad_specs_and_images_say_what_is_wrong():
    with pytest.raises(kiln.InvalidInputError, match=r'"rgb", "bgr" or "gray"'):
        kiln.Preprocess(channels="rgba")
    with pytest.raises(kiln.InvalidInputError, match="mean has 2 values"):
        kiln.Preprocess(mean=[0.5, 0.5])
    with pytest.raises(kiln.InvalidInputError, match="non-zero"):
        kiln.Preprocess(std=[1, 0, 1])
    pre = kiln.Preprocess()
    with pytest.raises(kiln.InvalidInputError, match="uint8"):
        pre.apply(np.zeros((4, 4, 3), np.float32), (2, 2))
    with pytest.raises(kiln.InvalidInputError, match=r"\[4, 4, 2\]"):
        pre.apply(np.zeros((4, 4, 2), np.uint8), (2, 2))
    with pytest.raises(kiln.InvalidInputError, match="kiln.Preprocess"):
        model().export_onnx(preprocess={"scale": 1})
