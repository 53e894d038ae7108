"""A real tritonserver on loopback serving a tiny world model built in the test."""

import re

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from services.common.redis_server import free_port
from services.world_model.client import WorldModelClient, WorldModelError
from services.world_model.launcher import TritonPorts, TritonServer
from w2a_models.world_model import WorldModel
from w2a_models.world_model.builder import build_tiny


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("wm")
    model_dir = build_tiny(root / "tiny")
    server = TritonServer(model_dir, root / "triton", TritonPorts(free_port(), free_port(), free_port()))
    server.start(timeout=180)
    client = WorldModelClient(f"127.0.0.1:{server.ports.grpc}", timeout=60)
    try:
        yield server, client, WorldModel.from_pretrained(model_dir)
    finally:
        client.close()
        server.stop()


def _clip(n=13, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)


def test_encode_matches_in_process(stack):
    _, client, local = stack
    clip = _clip()
    remote = client.encode(clip, "reach the puck")
    np.testing.assert_allclose(remote, local.encode(clip, "reach the puck"), atol=1e-4)
    np.testing.assert_allclose(remote, client.encode(clip, "reach the puck"), atol=1e-6)


def test_generate_matches_in_process_and_is_seeded(stack):
    _, client, local = stack
    frame = _clip()[0]
    remote = client.generate(frame, "push the puck", 9, seed=5, return_video=True)
    here = local.generate(frame, "push the puck", 9, seed=5, decode=True)
    np.testing.assert_allclose(remote.features, here.features, atol=1e-4)
    assert remote.video.shape == (9, 64, 64, 3) and remote.video.dtype == np.uint8
    again = client.generate(frame, "push the puck", 9, seed=5)
    np.testing.assert_allclose(again.features, remote.features, atol=1e-6)
    assert again.video is None


def test_chain_through_the_service_conditions_on_the_last_frame(stack):
    _, client, local = stack
    frame = _clip()[0]
    segments = client.generate_chain(frame, ["reach the puck", "push the puck"], 9, seed=2)
    assert len(segments) == 2
    second = local.generate(segments[0].video[-1], "push the puck", 9, seed=3)
    np.testing.assert_allclose(segments[1].features, second.features, atol=1e-3)


def test_bad_inputs_get_clear_errors_and_the_server_stays_up(stack):
    server, client, _ = stack
    raw = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports.grpc}")

    def infer_raw(array, dtype):
        tensor = grpcclient.InferInput("VIDEO", list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        return raw.infer("wm_encode", [tensor], client_timeout=30)

    cases = [
        (np.zeros((1, 12, 64, 64, 3), np.uint8), "UINT8", "1 + a multiple of 4"),
        (np.zeros((1, 0, 64, 64, 3), np.uint8), "UINT8", "empty"),
        (np.zeros((1, 5, 40, 40, 3), np.uint8), "UINT8", "multiples of 16"),
        (np.zeros((1, 5, 1024, 1024, 3), np.uint8), "UINT8", "exceeds the limits"),
        (np.zeros((1, 13, 64, 64, 3), np.float32), "FP32", "data-type"),
        (np.zeros((1, 13, 64, 64), np.uint8), "UINT8", "shape"),
    ]
    for array, dtype, needle in cases:
        with pytest.raises(InferenceServerException, match=f"(?i){re.escape(needle)}") as err:
            infer_raw(array, dtype)
        assert needle.lower() in str(err.value).lower(), (needle, str(err.value))
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT", (needle, err.value.status())
    with pytest.raises(WorldModelError, match="uint8"):
        client.encode(np.zeros((13, 64, 64, 3), np.float32))
    with pytest.raises(WorldModelError, match="NUM_FRAMES"):
        client.generate(_clip()[0], "x", num_frames=1)
    raw.close()
    assert client.ready()
    assert client.encode(_clip()).shape == (4, 128)


def test_concurrent_generate_requests_are_sampled_as_one_batch_with_one_by_one_results(stack):
    """Triton groups concurrent wm_generate requests; the backend samples a group in one loop,
    and every request still gets exactly what it would alone (its seed, its skill)."""
    from concurrent.futures import ThreadPoolExecutor

    server, _, local = stack
    frames = [_clip(seed=s)[0] for s in range(8)]
    skills = ["push the puck", "open the door", "", "reach the puck"] * 2
    seeds = list(range(8))
    stats_client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports.grpc}")

    def counts():
        stat = stats_client.get_inference_statistics("wm_generate", as_json=True)["model_stats"][0]
        return int(stat.get("inference_count", 0)), int(stat.get("execution_count", 0))

    def one(i):
        with WorldModelClient(f"127.0.0.1:{server.ports.grpc}", timeout=120) as c:
            return c.generate(frames[i], skills[i], 9, seed=seeds[i]).features

    before = counts()
    with ThreadPoolExecutor(8) as pool:
        remote = list(pool.map(one, range(8)))
    inferences, executions = (a - b for a, b in zip(counts(), before))
    stats_client.close()
    assert inferences == 8 and executions < 8, (inferences, executions)  # some requests shared a run
    for i in range(8):
        alone = local.generate(frames[i], skills[i], 9, seed=seeds[i]).features
        np.testing.assert_allclose(remote[i], alone, atol=1e-4)


def test_a_client_batch_of_clips_is_encoded_clip_by_clip(stack):
    """max_batch_size 8 is what wm_encode declares: a request may carry several clips (what
    perf_analyzer -b 2 sends), each gets its own features."""
    server, client, local = stack
    raw = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports.grpc}")
    clips = np.stack([_clip(9, seed=s) for s in range(2)])
    video = grpcclient.InferInput("VIDEO", list(clips.shape), "UINT8")
    video.set_data_from_numpy(clips)
    text = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"reach the puck"], [b""]], dtype=object))
    features = raw.infer("wm_encode", [video, text], client_timeout=60).as_numpy("FEATURES")
    assert features.shape == (2, 3, 128)
    np.testing.assert_allclose(features[0], local.encode(clips[0], "reach the puck"), atol=1e-4)
    np.testing.assert_allclose(features[1], local.encode(clips[1]), atol=1e-4)
    np.testing.assert_allclose(features[0], client.encode(clips[0], "reach the puck"), atol=1e-5)
    bad = grpcclient.InferInput("VIDEO", [2, 8, 64, 64, 3], "UINT8")
    bad.set_data_from_numpy(np.zeros((2, 8, 64, 64, 3), np.uint8))
    with pytest.raises(Exception, match="1 \\+ a multiple of 4") as err:
        raw.infer("wm_encode", [bad], client_timeout=60)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    raw.close()


def _failures(server):
    import re
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=10).read().decode()
    return {(m, r): float(v) for m, r, v in
            re.findall(r'w2a_wm_request_failure_total\{model="(\w+)",reason="(\w+)"\} (\S+)', text)}


def test_failed_requests_are_counted_as_failures_on_the_metrics_endpoint(stack):
    """Triton's own counters call an error response a success (server#7713): ours count it."""
    server, client, _ = stack
    before = _failures(server)
    for _ in range(3):
        with pytest.raises(WorldModelError):
            client.encode(_clip(8))  # 8 frames: not 1 + 4k
    with pytest.raises(WorldModelError):
        client.generate(_clip()[0][:40], "x", 9)  # 40 px: not a multiple of 16
    client.encode(_clip())  # a good one is not counted
    after = _failures(server)
    grown = {k: after[k] - before.get(k, 0.0) for k in after}
    assert grown.get(("wm_encode", "invalid_argument")) == 3
    assert grown.get(("wm_generate", "invalid_argument")) == 1


def test_one_bad_request_in_a_generate_batch_fails_alone(stack):
    from concurrent.futures import ThreadPoolExecutor

    server, _, local = stack

    def one(i):
        with WorldModelClient(f"127.0.0.1:{server.ports.grpc}", timeout=120, retries=0) as c:
            try:  # request 2 asks for 10 frames (not 1 + 4k): its own error, nobody else's
                return c.generate(_clip(seed=i)[0], "push the puck", 10 if i == 2 else 9, seed=i).features
            except WorldModelError as exc:
                return exc

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(one, range(5)))
    assert isinstance(results[2], WorldModelError) and "NUM_FRAMES" in str(results[2])
    for i in (0, 1, 3, 4):
        np.testing.assert_allclose(results[i], local.generate(_clip(seed=i)[0], "push the puck", 9, seed=i).features,
                                   atol=1e-4)


def test_generate_batch_equals_one_by_one_in_process(stack):
    _, _, local = stack
    frames = [_clip(seed=s)[0] for s in range(3)]
    batch = local.generate_batch(frames, ["push the puck", "", "open the door"], 9, [4, 5, 4], decode=True)
    for frame, skill, seed, got in zip(frames, ["push the puck", "", "open the door"], [4, 5, 4], batch):
        alone = local.generate(frame, skill, 9, seed=seed, decode=True)
        np.testing.assert_allclose(got.features, alone.features, atol=1e-5)
        assert np.abs(got.video.astype(int) - alone.video.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="share a size"):
        local.generate_batch([frames[0], frames[0][:32]], ["a", "b"], 9, [0, 0])


def test_stage1_chunks_through_triton_are_cached(stack, tmp_path):
    from services.jobs.stage1_data import TritonEncoder, build_chunks
    from w2a_models.episodes import Episode, EpisodeStore, read_episode

    _, client, local = stack
    rng = np.random.default_rng(0)
    store = EpisodeStore(tmp_path / "eps")
    for seed in range(2):
        T = 26
        state = np.zeros((T, 18), np.float32)
        state[:, 0] = np.linspace(0, 1, T)  # the hand moves; the object rises after the grasp
        state[13:, 6] = 0.1
        store.add(Episode(frames=rng.integers(0, 255, (T, 64, 64, 3), dtype=np.uint8),
                          actions=rng.standard_normal((T, 4)).astype(np.float32), state=state,
                          gripper=(np.arange(T) >= 13).astype(np.float32),
                          instruction="pick up the puck and place it at the goal",
                          task="pick-place-v3", seed=seed))

    class Counting:
        def __init__(self):
            self.calls = 0

        def encode(self, clip):
            self.calls += 1
            return client.encode(clip)

    counting = Counting()
    encoder = TritonEncoder(counting, version="test")
    chunks = build_chunks(store.paths(), encoder, 8, tmp_path / "cache", progress=False)
    # segments [0,13) and [13,25): one 8-step chunk in each, per demo
    assert chunks.latents.shape == (4, 2, 128) and chunks.actions.shape == (4, 8, 4)
    assert sorted(chunks.skill_names) == ["pick-place-v3: carry the puck to the goal and place it",
                                          "pick-place-v3: reach and grasp the puck"]
    episode = read_episode(store.paths()[0])
    expected = local.encode(episode.frames[0:9])[1:]
    np.testing.assert_allclose(chunks.latents[0], expected, atol=1e-4)
    calls = counting.calls
    again = build_chunks(store.paths(), encoder, 8, tmp_path / "cache", progress=False)
    assert counting.calls == calls  # served from the cache
    np.testing.assert_array_equal(again.latents, chunks.latents)


def test_serve_world_model_cli_stops_cleanly_on_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    model_dir = build_tiny(tmp_path / "tiny")
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "world-model",
                             "--model", str(model_dir), "--http-port", str(http),
                             "--grpc-port", str(grpc_port), "--metrics-port", str(metrics),
                             "--workdir", str(tmp_path / "work")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ})
    try:
        with WorldModelClient(f"127.0.0.1:{grpc_port}") as client:
            client.wait_ready(120)
            assert client.encode(_clip(5)).shape == (2, 128)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "world model stopped (tritonserver exit 0)" in out


def test_calls_spread_over_two_servers_and_go_on_when_one_stops(tmp_path):
    """Client-side balancing (issue 21): round robin over the servers that answer; a stopped one is
    skipped (and tried again after its cool-down), so Stage 2's wm_generate calls keep going."""
    model_dir = build_tiny(tmp_path / "tiny")
    servers = [TritonServer(model_dir, tmp_path / f"triton{i}", TritonPorts(free_port(), free_port(), free_port()))
               for i in range(2)]
    for s in servers:
        s.start(timeout=180)
    endpoints = [f"127.0.0.1:{s.ports.grpc}" for s in servers]
    frame = _clip(1)[0]
    try:
        with WorldModelClient(",".join(endpoints), timeout=60, retries=1, backoff=0.1, cooldown_s=60) as wm:
            assert wm.ready()
            first = [wm.generate(frame, "push the puck", 9, seed=3).features for _ in range(4)]
            assert {wm.served[(e, "wm_generate")] for e in endpoints} == {2}  # two calls each
            np.testing.assert_allclose(first[0], first[1], atol=1e-5)  # same weights, same seed, same target
            servers[1].stop()
            after = [wm.generate(frame, "push the puck", 9, seed=3).features for _ in range(4)]
            assert wm.served[(endpoints[0], "wm_generate")] == 6 and wm.served[(endpoints[1], "wm_generate")] == 2
            np.testing.assert_allclose(after[0], first[0], atol=1e-5)
            servers[0].stop()
            with pytest.raises(WorldModelError, match="no world-model server answered"):
                wm.generate(frame, "push the puck", 9)
    finally:
        for s in servers:
            s.stop()
