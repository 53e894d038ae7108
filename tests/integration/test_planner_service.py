"""The planner over real HTTP: the openai backend against a local chat server, the Redis cache,
the uvicorn process, and a schemathesis run over the OpenAPI schema."""

import os
import signal
import subprocess
import sys
import time

import httpx
import redis
from fastapi.testclient import TestClient

from services.common.redis_server import EmbeddedRedis, free_port
from services.planner.app import create_app
from services.planner.settings import PlannerSettings
from tests.planner_helpers import VALID_PLAN, FakeChatServer

INSTR = "pick up the puck and place it at the goal"


def _openai_settings(url, **kw):
    base = dict(openai_base_url=url, openai_api_key="sk-test", openai_model="test-model",
                openai_timeout_s=1.0, openai_retries=2, openai_backoff_s=0.01, cache_enabled=False,
                default_backend="openai")
    base.update(kw)
    return PlannerSettings(**base)


def test_openai_backend_valid_answer_and_request_shape():
    with FakeChatServer() as chat, TestClient(create_app(_openai_settings(chat.url))) as client:
        r = client.post("/v1/skill-plans", json={"instruction": INSTR, "max_skills": 4})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["backend"] == "openai" and body["model"] == "test-model" and not body["cached"]
        assert [s["kind"] for s in body["skills"]] == ["grasp", "place"]
        sent = chat.requests[0]
        assert sent["model"] == "test-model" and sent["response_format"] == {"type": "json_object"}
        assert sent["messages"][0]["role"] == "system" and INSTR in sent["messages"][1]["content"]
        assert chat.headers[0]["Authorization"] == "Bearer sk-test"


def test_json_schema_mode_sends_the_schema():
    with FakeChatServer() as chat:
        settings = _openai_settings(chat.url, openai_response_format="json_schema")
        with TestClient(create_app(settings)) as client:
            assert client.post("/v1/skill-plans", json={"instruction": INSTR}).status_code == 200
        fmt = chat.requests[0]["response_format"]
        assert fmt["type"] == "json_schema" and "skills" in fmt["json_schema"]["schema"]["properties"]


def test_malformed_then_valid_is_retried():
    with FakeChatServer([("text", "{not json"), ("json", {"skills": []}), ("json", VALID_PLAN)]) as chat:
        with TestClient(create_app(_openai_settings(chat.url))) as client:
            r = client.post("/v1/skill-plans", json={"instruction": INSTR})
        assert r.status_code == 200 and len(chat.requests) == 3


def test_a_plan_longer_than_max_skills_is_cut_and_says_so():
    with (
        FakeChatServer() as chat,  # always answers two skills
        TestClient(create_app(_openai_settings(chat.url, openai_retries=0))) as client,
    ):
        r = client.post("/v1/skill-plans", json={"instruction": INSTR, "max_skills": 1})
        whole = client.post("/v1/skill-plans", json={"instruction": INSTR, "max_skills": 4}).json()
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["skills"]) == 1 and body["truncated"] is True and body["total_skills"] == 2
    assert whole["truncated"] is False and whole["total_skills"] == 2 and len(whole["skills"]) == 2


def test_an_unknown_task_is_named_in_a_warning():
    with TestClient(create_app(PlannerSettings(default_backend="rules", cache_enabled=False))) as client:
        r = client.post("/v1/skill-plans", json={"instruction": "push the puck to the goal",
                                                 "task": "no-such-task-v3"})
        known = client.post("/v1/skill-plans", json={"instruction": "push the puck to the goal",
                                                     "task": "push-v3"}).json()
    assert r.status_code == 200 and r.json()["skills"]
    (warning,) = r.json()["warnings"]
    assert "no-such-task-v3" in warning and "push-v3" in warning
    assert known["warnings"] == []


def test_always_malformed_is_502_with_a_message():
    with (
        FakeChatServer([("text", "sure! here are the skills: 1. grasp")]) as chat,
        TestClient(create_app(_openai_settings(chat.url))) as client,
    ):
        r = client.post("/v1/skill-plans", json={"instruction": INSTR})
    assert r.status_code == 502 and "invalid plan" in r.json()["detail"]
    assert len(chat.requests) == 3  # first try + 2 retries


def test_slow_backend_is_504_within_the_deadline():
    with FakeChatServer([("sleep", 3.0)]) as chat:
        settings = _openai_settings(chat.url, openai_timeout_s=0.3, openai_retries=1)
        with TestClient(create_app(settings)) as client:
            start = time.monotonic()
            r = client.post("/v1/skill-plans", json={"instruction": INSTR})
            elapsed = time.monotonic() - start
    assert r.status_code == 504 and "no answer within" in r.json()["detail"]
    assert elapsed < 2.0


def test_upstream_5xx_then_fallback_to_rules():
    with FakeChatServer([("status", 500)]) as chat:
        settings = _openai_settings(chat.url, fallback_to_rules=True)
        with TestClient(create_app(settings)) as client:
            r = client.post("/v1/skill-plans", json={"instruction": INSTR, "task": "pick-place-v3"})
    assert r.status_code == 200 and r.json()["backend"] == "rules"


def test_missing_key_is_503_naming_the_setting():
    with TestClient(create_app(PlannerSettings(cache_enabled=False))) as client:
        r = client.post("/v1/skill-plans", json={"instruction": INSTR, "backend": "openai"})
    assert r.status_code == 503 and "W2A_PLANNER_OPENAI_API_KEY" in r.json()["detail"]


def test_request_limits_name_the_field():
    with TestClient(create_app(PlannerSettings(cache_enabled=False, max_instruction_chars=50))) as client:
        cases = [({"instruction": ""}, "instruction"), ({"instruction": "  \n "}, "instruction"),
                 ({"instruction": "x" * 51}, "instruction"), ({"instruction": "x", "max_skills": 0}, "max_skills"),
                 ({"instruction": "x", "max_skills": 17}, "max_skills"),
                 ({"instruction": "x", "backend": "gpt-5"}, "backend"), ({}, "instruction")]
        for body, field in cases:
            r = client.post("/v1/skill-plans", json=body)
            assert r.status_code == 422 and field in r.json()["detail"], (body, r.text)
        bad_segments = {"instruction": INSTR, "segments": [{"start": 5, "end": 5}]}
        r = client.post("/v1/skill-alignments", json=bad_segments)
        assert r.status_code == 422 and "segments" in r.json()["detail"]


def test_alignment_endpoint():
    with TestClient(create_app(PlannerSettings(cache_enabled=False))) as client:
        segs = [{"start": 0, "end": 24}, {"start": 24, "end": 59}]
        ok = client.post("/v1/skill-alignments", json={"instruction": INSTR, "segments": segs}).json()
        assert ok["in_sync"] and [p["kind"] for p in ok["pairs"]] == ["grasp", "place"]
        bad = client.post("/v1/skill-alignments", json={"skills": ["reach", "grasp", "lift"],
                                                         "segments": segs}).json()
        assert not bad["in_sync"] and "3 skills but 2 segments" in bad["reason"]


def test_cache_hit_in_real_redis(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as rds:
        with TestClient(create_app(PlannerSettings(), redis_url=rds.url)) as client:
            first = client.post("/v1/skill-plans", json={"instruction": INSTR}).json()
            second = client.post("/v1/skill-plans",
                                 json={"instruction": "  Pick up the puck and place it at the goal."}).json()
            assert not first["cached"] and second["cached"]
            assert first["plan_id"] == second["plan_id"] and first["skills"] == second["skills"]
            keys = redis.Redis.from_url(rds.url).keys("w2a:plan:*")
            assert len(keys) == 1 and redis.Redis.from_url(rds.url).ttl(keys[0]) > 0
            ready = client.get("/readyz").json()
            assert ready["ready"] and ready["checks"]["redis"]["ok"]
        rds.kill()
        with TestClient(create_app(PlannerSettings(), redis_url=rds.url)) as client:
            # Redis down: planning still works (uncached) and readiness says why
            assert client.post("/v1/skill-plans", json={"instruction": INSTR}).status_code == 200
            r = client.get("/readyz")
            assert r.status_code == 503 and "redis" in r.json()["detail"]


def test_real_uvicorn_process_and_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "W2A_PLANNER_PORT": str(port), "W2A_PLANNER_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "planner"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "planner did not start"
            time.sleep(0.2)
        r = httpx.post(f"{base}/v1/skill-plans", json={"instruction": "push the puck to the goal"})
        assert r.status_code == 200 and len(r.json()["skills"]) == 3
        assert httpx.get(f"{base}/readyz").json()["ready"]
        assert "w2a_planner_requests_total" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/docs").status_code == 200
        cli = subprocess.run([sys.executable, "-m", "services.cli", "plan", "push the puck", "--url", base],
                             capture_output=True, text=True)
        assert cli.returncode == 0 and '"push the puck"' in cli.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_schemathesis_no_server_errors():
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings

    with FakeChatServer([("obey", None)]) as chat:
        app = create_app(_openai_settings(chat.url, default_backend="rules"))
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 5
        for operation in operations:
            @hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck),
                       database=None)
            @given(case=operation.as_strategy())
            def run(case):
                response = case.call()
                assert response.status_code < 500, (case.body, response.text)
                if 400 <= response.status_code < 500:
                    assert response.json().get("detail"), response.text

            run()
