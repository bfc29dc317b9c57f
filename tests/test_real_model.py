"""Optional check against the real jina-colbert-v2 (set COLBERT_ONNX_REAL_MODEL to its checkpoint folder).

Reference: first 5 dims of fastembed's tests/test_late_interaction_embeddings.py for "Hello World".
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REAL = os.environ.get("COLBERT_ONNX_REAL_MODEL")
pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        not REAL, reason="COLBERT_ONNX_REAL_MODEL is not set: no real jina-colbert-v2 checkpoint on this machine"
    ),
]

DOCUMENT_REFERENCE = np.array(
    [
        [0.0744, 0.0590, -0.2404, -0.1776, 0.0198],
        [0.1318, 0.0882, -0.1136, -0.2065, 0.1461],
        [-0.0178, -0.1359, -0.0136, -0.1075, -0.0509],
        [0.0004, -0.1198, -0.0696, -0.0482, -0.0650],
        [0.0766, 0.0448, -0.2344, -0.1829, 0.0061],
    ]
)
QUERY_REFERENCE = np.array(
    [
        [0.0475, 0.0250, -0.2225, -0.1087, -0.0297],
        [0.0211, -0.0844, -0.0070, -0.1715, 0.0154],
        [-0.0062, -0.0958, -0.0142, -0.1283, -0.0218],
        [0.0490, -0.0500, -0.1613, 0.0193, 0.0280],
        [0.0477, 0.0250, -0.2279, -0.1128, -0.0289],
        [0.0597, -0.0676, -0.0955, -0.0756, 0.0234],
        [0.0592, -0.0858, -0.0621, -0.1088, 0.0148],
        [0.0870, -0.0715, -0.0769, -0.1414, 0.0365],
        [0.1015, -0.0552, -0.0667, -0.1637, 0.0492],
        [0.1135, -0.0469, -0.0573, -0.1702, 0.0535],
        [0.1226, -0.0430, -0.0508, -0.1729, 0.0553],
        [0.1287, -0.0387, -0.0425, -0.1757, 0.0567],
        [0.1360, -0.0337, -0.0327, -0.1790, 0.0570],
        [0.1434, -0.0267, -0.0242, -0.1831, 0.0569],
        [0.1528, -0.0091, -0.0184, -0.1881, 0.0570],
        [0.1547, 0.0185, -0.0231, -0.1803, 0.0538],
        [0.1396, 0.0533, -0.0349, -0.1637, 0.0429],
        [0.1074, 0.0851, -0.0418, -0.1461, 0.0231],
        [0.0719, 0.1061, -0.0440, -0.1291, -0.0003],
        [0.0456, 0.1146, -0.0457, -0.1118, -0.0192],
        [0.0347, 0.1132, -0.0493, -0.0955, -0.0341],
        [0.0357, 0.1074, -0.0491, -0.0821, -0.0449],
        [0.0421, 0.1036, -0.0461, -0.0763, -0.0488],
        [0.0479, 0.1019, -0.0434, -0.0721, -0.0483],
        [0.0470, 0.0988, -0.0423, -0.0654, -0.0440],
        [0.0439, 0.0947, -0.0418, -0.0591, -0.0349],
        [0.0397, 0.0898, -0.0415, -0.0555, -0.0206],
        [0.0434, 0.0815, -0.0411, -0.0543, 0.0057],
        [0.0512, 0.0629, -0.0442, -0.0547, 0.0378],
        [0.0584, 0.0483, -0.0528, -0.0607, 0.0568],
        [0.0568, 0.0456, -0.0674, -0.0699, 0.0768],
        [0.0205, -0.0859, -0.0385, -0.1231, -0.0331],
    ]
)


@pytest.fixture(scope="module")
def real_encoder(tmp_path_factory):
    pytest.importorskip("torch", reason="exporting the real checkpoint needs the [export] extra")
    from colbert_onnx import ColbertEncoder
    from colbert_onnx.export import export_model

    out = export_model([Path(REAL)], tmp_path_factory.mktemp("real-onnx"), precisions="fp32")
    return ColbertEncoder(out, dim=128)


def test_real_document_matches_fastembed_reference(real_encoder):
    (vectors,) = real_encoder.encode_documents(["Hello World"])
    assert vectors.shape[0] == 5
    np.testing.assert_allclose(vectors[:, :5], DOCUMENT_REFERENCE, atol=1e-3)


def test_real_query_matches_fastembed_reference(real_encoder):
    (vectors,) = real_encoder.encode_queries(["Hello World"])
    assert vectors.shape == (32, 128)
    np.testing.assert_allclose(vectors[:, :5], QUERY_REFERENCE, atol=1e-3)
