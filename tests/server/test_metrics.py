"""GET /metrics: the Prometheus text format, behind the API key, with numbers that move."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support.daemon_proc import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _metrics(daemon) -> dict[tuple[str, tuple], float]:
    response = httpx.get(daemon.url + "/metrics", headers=AUTH, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_api_key(daemon) -> None:
    response = httpx.get(daemon.url + "/metrics", timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_metrics_count_requests_tokens_and_latency(daemon) -> None:
    before = _metrics(daemon)
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0}
    reply = httpx.post(daemon.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=60).json()
    streamed = httpx.post(daemon.url + "/v1/completions", json={"prompt": "Once", "max_tokens": 4, "stream": True,
                                                            "temperature": 0},
                          headers=AUTH, timeout=60)
    assert streamed.status_code == 200
    assert httpx.get(daemon.url + "/v1/models/no-such-model", headers=AUTH, timeout=30).status_code == 404
    assert httpx.get(daemon.url + "/v1/models", timeout=30).status_code == 401
    assert httpx.get(daemon.url + "/nowhere", headers=AUTH, timeout=30).status_code == 404
    after = _metrics(daemon)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    total = "neuro_http_requests_total"
    assert delta(total, route="/v1/chat/completions", method="POST", status="200") == 1
    assert delta(total, route="/v1/completions", method="POST", status="200") == 1
    assert delta(total, route="/v1/models/{model:path}", method="GET", status="404") == 1
    assert delta(total, route="/v1/models", method="GET", status="401") == 1
    assert delta(total, route="other", method="GET", status="404") == 1
    assert delta(total, route="/metrics", method="GET", status="200") == 1  # the first scrape

    usage = reply["usage"]
    assert delta("neuro_prompt_tokens_total") >= usage["prompt_tokens"] + 1
    assert delta("neuro_generated_tokens_total") >= usage["completion_tokens"] + 1
    assert delta("neuro_time_to_first_token_seconds_count") == 2
    assert delta("neuro_time_to_first_token_seconds_sum") > 0
    assert delta("neuro_time_per_output_token_seconds_count") >= 1
    assert _value(after, "neuro_queue_waiting") == 0
    assert _value(after, "neuro_active_sequences") == 0
