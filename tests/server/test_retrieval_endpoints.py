"""POST /v1/embeddings (through the openai client) and POST /v1/search over a real index."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
openai = pytest.importorskip("openai")


def test_embeddings_are_unit_vectors_and_rank_meaning(openai_client) -> None:
    texts = ["the dog barks", "a puppy barks loudly", "fresh bread at the bakery"]
    result = openai_client.embeddings.create(model="default", input=texts, encoding_format="float")
    vectors = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert [d.index for d in result.data] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert result.usage.prompt_tokens > 0


def test_embeddings_base64_and_single_input(daemon, auth) -> None:
    plain = httpx.post(daemon.url + "/v1/embeddings", headers=auth, json={"input": "the moon"}).json()
    packed = httpx.post(daemon.url + "/v1/embeddings", headers=auth,
                        json={"input": "the moon", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, plain["data"][0]["embedding"], atol=1e-6)


def test_embeddings_reject_bad_input(daemon, auth) -> None:
    for body in ({"input": []}, {"input": 3}, {"input": "x", "model": "text-embedding-3-small"}):
        response = httpx.post(daemon.url + "/v1/embeddings", headers=auth, json=body)
        assert response.status_code in (400, 404) and "error" in response.json()


def test_search_finds_the_matching_document(daemon, auth) -> None:
    response = httpx.post(daemon.url + "/v1/search", headers=auth, json={"query": "dog barks", "top_k": 2})
    assert response.status_code == 200, response.text
    hits = response.json()["data"]
    assert 1 <= len(hits) <= 2
    assert hits[0]["path"].endswith("pets.md")
    assert "barks" in hits[0]["text"]
    bad = httpx.post(daemon.url + "/v1/search", headers=auth, json={"query": "", "top_k": 2})
    assert bad.status_code == 400
