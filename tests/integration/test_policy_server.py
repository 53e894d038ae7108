"""The policy server over real gRPC on loopback."""

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest

from services.policy.server import PolicyServer
from tests.policy_helpers import (
    ROBOT,
    SIZE,
    TRAINER,
    ServerThread,
    observation,
    residual_blob,
    settings,
    tiny_base,
)
from w2a_client.client import AsyncPolicyClient, PolicyClient, act_request, episode_end_request
from w2a_client.proto.w2a.v1 import policy_pb2 as pb

INSTR = "pick up the puck and place it at the goal"


@pytest.fixture(scope="module")
def base():
    return tiny_base()


@pytest.fixture
def server(tmp_path, base):
    with ServerThread(PolicyServer(settings(tmp_path), base)) as running:
        yield running


def test_act_round_trip_returns_base_chunk_in_bounds(server, base):
    images, state = observation()
    with PolicyClient(server.target, ROBOT) as client:
        info = client.info()
        assert (info.action_dim, info.chunk_size, info.state_dim) == (4, 4, 18)
        assert info.cameras[0].name == "corner" and info.residual_version == 0
        chunk = client.act("r1", images, state, INSTR, episode_id="e1")
    assert chunk.actions.shape == (4, 4) and chunk.version == 0 and not chunk.fallback
    np.testing.assert_allclose(chunk.residual, 0.0)
    np.testing.assert_allclose(chunk.actions, chunk.base)
    assert np.all(np.abs(chunk.actions) <= 1.0)
    # the same model called in-process agrees with what the server returned
    from w2a_models.base_policy import ObservationBatch
    direct = base.predict(ObservationBatch({"corner": images["corner"][None]}, state[None], [INSTR]))
    np.testing.assert_allclose(chunk.base, np.clip(direct.actions[0], -1, 1), atol=1e-5)


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_encoded_images_are_accepted(server, encoding):
    images, state = observation()
    with PolicyClient(server.target, ROBOT) as client:
        chunk = client.act("r1", images, state, INSTR, encoding=encoding)
    assert chunk.actions.shape == (4, 4)


def test_stream_act_session_with_episode_end(server):
    images, state = observation()
    requests = [act_request("r2", images, state, INSTR, episode_id="e", step=s) for s in range(0, 12, 4)]
    requests.append(episode_end_request("r2", "e", 12, success=True))
    with PolicyClient(server.target, ROBOT) as client:
        replies = list(client.stream(requests, timeout=10))
    assert [r.step for r in replies] == [0, 4, 8, 12]
    assert all(len(r.actions) == 16 for r in replies[:3]) and replies[-1].episode_ended


def test_concurrent_robots_are_batched(tmp_path, base):
    with ServerThread(PolicyServer(settings(tmp_path, max_wait_ms=30.0, max_batch=8), base)) as srv:
        async def many():
            client = AsyncPolicyClient(srv.target, ROBOT)
            images, state = observation()
            out = await asyncio.gather(*[client.act(f"r{i}", images, state, INSTR) for i in range(8)])
            await client.close()
            return out
        chunks = asyncio.run(many())
    assert max(c.timings.batch_size for c in chunks) > 1


def _code(fn):
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value.code(), err.value.details()


def test_bad_inputs_are_invalid_argument_naming_the_field(server):
    images, state = observation()
    with PolicyClient(server.target, ROBOT, retries=0, max_message_bytes=64 << 20) as client:
        cases = {
            "observation.images[0]": lambda: client.act("r", {"corner": np.zeros((SIZE, SIZE + 1, 3), np.uint8)},
                                                        state, INSTR),
            "observation.state": lambda: client.act("r", images, state[:5], INSTR),
            "instruction": lambda: client.act("r", images, state, "   "),
            "missing camera": lambda: client.act("r", {"wrist": images["corner"]}, state, INSTR),
        }
        for needle, call in cases.items():
            code, details = _code(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in details, (needle, details)
        nan_state = state.copy()
        nan_state[0] = np.nan
        code, details = _code(lambda: client.act("r", images, nan_state, INSTR))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "NaN" in details
        garbage = pb.ActRequest(robot_id="r", instruction=INSTR, observation=pb.Observation(
            state=state.tolist(), images=[pb.Image(camera="corner", encoding=pb.IMAGE_ENCODING_PNG,
                                                   data=b"\x89PNG garbage")]))
        code, details = _code(lambda: client.stub.Act(garbage, metadata=client.metadata, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "decode" in details
        big = pb.ActRequest(robot_id="r", instruction="x" * (9 << 20))  # limit 8 MiB
        code, details = _code(lambda: client.stub.Act(big, metadata=client.metadata, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "over the 8388608-byte limit" in details
        huge = pb.ActRequest(robot_id="r", instruction="x" * (17 << 20))
        code, _ = _code(lambda: client.stub.Act(huge, metadata=client.metadata, timeout=5))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the simulator's oracle is checked like any field (chunk 4 x 4 = 16 values, 5 frames)
        from w2a_client.client import act_request, image_proto

        frame = images["corner"]
        bad_oracles = {
            "oracle.expert_actions: has 3 values": pb.SimOracle(expert_actions=[0.1, 0.2, 0.3]),
            "oracle.expert_actions: contains NaN": pb.SimOracle(expert_actions=[float("nan")] * 16),
            "oracle.future_frames: has 2 frames": pb.SimOracle(future_frames=[image_proto(frame)] * 2),
        }
        for needle, oracle in bad_oracles.items():
            request = act_request("r", images, state, INSTR, oracle=oracle)
            code, details = _code(lambda request=request: client.stub.Act(request, metadata=client.metadata,
                                                                           timeout=5))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in details, (needle, details)
        good = act_request("r", images, state, INSTR, oracle=pb.SimOracle(
            expert_actions=[0.0] * 16, future_frames=[image_proto(frame)] * 5))
        assert len(client.stub.Act(good, metadata=client.metadata, timeout=5).actions) == 16
        # the server is still fine afterwards
        assert client.act("r", images, state, INSTR).actions.shape == (4, 4)


def test_auth(server, base):
    images, state = observation()
    blob, manifest = residual_blob(base, 1)
    for token, expected in [("", grpc.StatusCode.UNAUTHENTICATED), ("nope", grpc.StatusCode.UNAUTHENTICATED),
                            (TRAINER, grpc.StatusCode.PERMISSION_DENIED)]:
        with PolicyClient(server.target, token, retries=0) as client:
            assert _code(lambda: client.act("r", images, state, INSTR))[0] == expected
    with PolicyClient(server.target, ROBOT, retries=0) as robot:
        assert _code(lambda: robot.push_residual(blob, manifest))[0] == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: robot.rollback())[0] == grpc.StatusCode.PERMISSION_DENIED
        assert robot.info().residual_version == 0


def test_push_swap_tamper_rollback_and_restart(tmp_path, base):
    images, state = observation()
    state_dir = tmp_path / "state"
    with ServerThread(PolicyServer(settings(state_dir), base)) as srv:
        trainer, robot = PolicyClient(srv.target, TRAINER), PolicyClient(srv.target, ROBOT)
        blob1, man1 = residual_blob(base, 1)
        result = trainer.push_residual(blob1, man1)
        assert result.accepted and result.version == 1 and result.previous_version == 0
        chunk = robot.act("r", images, state, INSTR)
        assert chunk.version == 1 and np.abs(chunk.residual).max() > 1e-4
        np.testing.assert_allclose(chunk.actions, np.clip(chunk.base + chunk.residual, -1, 1), atol=1e-6)

        blob2, man2 = residual_blob(base, 2, parent=1, seed=2)
        tampered = bytearray(blob2)
        tampered[-3] ^= 0x55
        code, details = _code(lambda: trainer.push_residual(bytes(tampered), man2))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "sha256" in details
        assert robot.act("r", images, state, INSTR).version == 1  # old version still served
        code, details = _code(lambda: trainer.push_residual(blob1, man1))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not newer" in details
        assert trainer.push_residual(blob2, man2).version == 2
        back = trainer.rollback()
        assert (back.version, back.previous_version) == (1, 2)
        assert robot.act("r", images, state, INSTR).version == 1
        assert trainer.rollback(2).version == 2
        code, _ = _code(lambda: trainer.rollback(99))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        served = robot.act("r", images, state, INSTR)
        trainer.close()
        robot.close()
    # restart on the same state dir: the last accepted version is served, with the same weights
    with ServerThread(PolicyServer(settings(state_dir), base)) as srv, PolicyClient(srv.target, ROBOT) as robot:
        again = robot.act("r", images, state, INSTR)
    assert again.version == 2
    np.testing.assert_allclose(again.residual, served.residual, atol=1e-6)


def test_half_written_version_is_never_loaded(tmp_path, base):
    state_dir = tmp_path / "state"
    with ServerThread(PolicyServer(settings(state_dir), base)) as srv, PolicyClient(srv.target, TRAINER) as trainer:
        trainer.push_residual(*residual_blob(base, 1))
        trainer.push_residual(*residual_blob(base, 2, seed=3))
    blob_path = state_dir / "residuals" / "v00000002" / "model.safetensors"
    blob_path.write_bytes(blob_path.read_bytes()[:100])  # as if the disk write was torn
    with ServerThread(PolicyServer(settings(state_dir), base)) as srv, PolicyClient(srv.target, ROBOT) as robot:
        assert robot.info().residual_version == 1


def test_hot_swap_under_load_has_no_failures(tmp_path, base):
    images, state = observation()
    with ServerThread(PolicyServer(settings(tmp_path), base)) as srv:
        failures, seen, stop = [], {i: [] for i in range(4)}, threading.Event()

        def robot_loop(i):
            with PolicyClient(srv.target, ROBOT, retries=0) as client:
                while not stop.is_set():
                    try:
                        seen[i].append(client.act(f"r{i}", images, state, INSTR).version)
                    except grpc.RpcError as exc:
                        failures.append(exc)

        threads = [threading.Thread(target=robot_loop, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        with PolicyClient(srv.target, TRAINER) as trainer:
            for version in range(1, 6):
                assert trainer.push_residual(*residual_blob(base, version, seed=version)).accepted
                time.sleep(0.05)
        time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    for versions in seen.values():
        assert versions == sorted(versions) and versions[-1] == 5


def test_weights_only_on_the_admin_port_when_one_is_set(tmp_path):
    base = tiny_base()
    server = PolicyServer(settings(tmp_path, admin_port=0), base)
    images, state = observation()
    blob, manifest = residual_blob(base, 1)
    with ServerThread(server) as srv:
        admin = f"127.0.0.1:{server.admin_port}"
        with PolicyClient(srv.target, TRAINER) as main_port, PolicyClient(admin, TRAINER) as admin_port, \
                PolicyClient(srv.target, ROBOT) as robot, PolicyClient(admin, ROBOT) as robot_on_admin:
            code, detail = _code(lambda: main_port.push_residual(blob, manifest))
            assert code == grpc.StatusCode.PERMISSION_DENIED and "admin port" in detail
            assert admin_port.push_residual(blob, manifest).version == 1
            code, _ = _code(lambda: robot_on_admin.act("r", images, state, "push"))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert robot.act("r", images, state, "push").version == 1
