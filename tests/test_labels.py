from __future__ import annotations

import pytest
import torch

from negsynth_hf.labels import decode_negative_labels, encode_negative_labels


def test_encode_decode_round_trip():
    rows = [encode_negative_labels([1.0, 0.25, 0.0], [False, True, True]), encode_negative_labels([1, 1, 1], [0, 0, 1])]
    weights, generated = decode_negative_labels(torch.tensor(rows), 3)
    assert weights.tolist() == [[1.0, 0.25, 0.0], [1.0, 1.0, 1.0]]
    assert generated.tolist() == [[False, True, True], [False, False, True]]


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_encode_rejects_out_of_range_weight(bad):
    with pytest.raises(ValueError, match="negative_2"):
        encode_negative_labels([1.0, bad], [False, True])


def test_encode_rejects_length_mismatch():
    with pytest.raises(ValueError, match="one weight and one source flag"):
        encode_negative_labels([1.0], [False, True])


def test_decode_names_expected_shape():
    with pytest.raises(ValueError, match=r"\(batch, 6\)"):
        decode_negative_labels(torch.zeros(2, 4), 3)


def test_tiny_model_encodes(tiny_model):
    emb = tiny_model.encode(["a query", "a passage"], convert_to_tensor=True)
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
