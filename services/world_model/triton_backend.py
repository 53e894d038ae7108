"""Triton python-backend models around ``w2a_models.world_model.WorldModel``.

The repository's ``model.py`` files only import these classes, so the same repository runs under
the ``tritonserver`` shipped in the nvidia-pytriton wheel (CPU, here) and in NVIDIA's Triton
container (GPU) with w2a installed. Weights: the model parameter ``model_dir`` or, when that is
empty, the ``W2A_WM_DIR`` environment variable. Errors go back to the caller as per-request
TritonError responses; one bad request never fails the batch or the server.
"""

from __future__ import annotations

import json

import numpy as np

FAILURE_METRIC = "w2a_wm_request_failure_total"
_failure_family = None  # its MetricFamily, created once per stub process on first use


def _utils():
    import triton_python_backend_utils as pb_utils  # provided by the python backend

    return pb_utils


class _WorldModelBackend:
    """Shared set-up: configuration, device, threads, the WorldModel."""

    def initialize(self, args: dict) -> None:
        import torch

        from services.common.settings import SharedSettings
        from services.world_model.settings import WorldModelSettings
        from w2a_models.world_model import WorldModel, WorldModelConfig

        torch.set_num_threads(SharedSettings().torch_threads)
        env = WorldModelSettings()
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        model_dir = params.get("model_dir") or env.dir
        if not model_dir:
            raise RuntimeError("no world-model weights: set parameter model_dir or W2A_WM_DIR")
        kind = args.get("model_instance_kind", "CPU")
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
        wm_config = WorldModelConfig(
            device=device,
            num_inference_steps=int(params.get("num_inference_steps") or env.num_inference_steps
                                    or WorldModelConfig.num_inference_steps),
            guidance_scale=float(params.get("guidance_scale") or 1.0),
            tap_block=int(params.get("tap_block") or -2),
            tap_sigma=float(params.get("tap_sigma") or 0.05),
            tap_seed=int(params.get("tap_seed") or 0),
            features=params.get("features") or env.features)
        self.model = WorldModel.from_pretrained(model_dir, wm_config)
        self._model_name = str(args.get("model_name", ""))
        self._failures: dict[str, object] = {}  # reason -> counter (created on first use)
        self.max_video_frames = int(params.get("max_video_frames") or 257)
        self.max_pixels = int(params.get("max_pixels") or 512 * 512)

    @staticmethod
    def _optional(request, name, default):
        tensor = _utils().get_input_tensor_by_name(request, name)
        return default if tensor is None else tensor.as_numpy()

    @staticmethod
    def _text(value) -> str:
        item = np.asarray(value).reshape(-1)[0] if np.asarray(value).size else b""
        return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)

    def _count_failure(self, reason: str) -> None:
        """Triton counts a python-backend response that carries an error as a *success*
        (``nv_inference_request_success``; triton-inference-server/server#7713), so dashboards
        could not see failures: this custom counter on Triton's /metrics endpoint does."""
        global _failure_family
        pb = _utils()
        if _failure_family is None:
            _failure_family = pb.MetricFamily(
                name=FAILURE_METRIC, kind=pb.MetricFamily.COUNTER,
                description="w2a world-model requests answered with an error, by model and reason")
        if reason not in self._failures:
            self._failures[reason] = _failure_family.Metric(labels={"model": self._model_name, "reason": reason})
        self._failures[reason].increment(1)

    def _error(self, message: str, invalid: bool = False):
        """A per-request error; ``invalid``: the caller's mistake (gRPC INVALID_ARGUMENT)."""
        pb = _utils()
        self._count_failure("invalid_argument" if invalid else "internal")
        code = pb.TritonError.INVALID_ARG if invalid else pb.TritonError.INTERNAL
        return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(message, code))


class EncodeModel(_WorldModelBackend):
    """wm_encode: VIDEO uint8 [B, T, H, W, 3] (+ optional TEXT [B, 1]) -> FEATURES fp32
    [B, T_lat, D]. A request may carry several clips (up to ``max_batch_size``, as declared); the
    clips of all requests in a Triton batch that share a shape run as one forward."""

    def _check(self, video: np.ndarray) -> str | None:
        if video.ndim != 4 or video.shape[-1] != 3:
            return f"VIDEO must be [T, H, W, 3] per clip, got {list(video.shape)}"
        if video.shape[0] == 0:
            return "VIDEO is empty"
        if video.shape[0] > self.max_video_frames or video.shape[1] * video.shape[2] > self.max_pixels:
            return (f"VIDEO {list(video.shape)} exceeds the limits ({self.max_video_frames} frames, "
                    f"{self.max_pixels} pixels)")
        if (video.shape[0] - 1) % self.model.temporal_factor:
            return f"VIDEO has {video.shape[0]} frames; need 1 + a multiple of {self.model.temporal_factor}"
        if video.shape[1] % 16 or video.shape[2] % 16:
            return "VIDEO height and width must be multiples of 16"
        return None

    def execute(self, requests):
        pb = _utils()
        responses: list = [None] * len(requests)
        outputs: list[list] = [[] for _ in requests]  # per request: features of each of its clips
        groups: dict[tuple, list[tuple[int, int, np.ndarray, str]]] = {}
        for i, request in enumerate(requests):
            videos = pb.get_input_tensor_by_name(request, "VIDEO").as_numpy()
            clips = videos if videos.ndim == 5 else videos[None]  # a batched model sees [B, T, H, W, 3]
            texts = np.asarray(self._optional(request, "TEXT", np.array([b""], dtype=object))).reshape(-1)
            if len(texts) == 1:
                texts = np.repeat(texts, len(clips))  # one text for every clip of the request
            problem = next((p for p in (self._check(c) for c in clips) if p), None)
            if problem is None and len(texts) != len(clips):
                problem = f"TEXT has {len(texts)} entries for {len(clips)} clips"
            if problem:
                responses[i] = self._error(problem, invalid=True)
                continue
            outputs[i] = [None] * len(clips)
            for k, clip in enumerate(clips):
                groups.setdefault(clip.shape, []).append((i, k, clip, self._text(texts[k:k + 1])))
        for items in groups.values():  # same-shape clips run as one batch
            try:
                feats = self.model.encode_batch(np.stack([c for *_, c, _ in items]), [t for *_, t in items])
            except Exception as exc:  # noqa: BLE001 - report, do not crash the model
                for i, *_ in items:
                    responses[i] = self._error(f"encode failed: {type(exc).__name__}: {exc}")
                continue
            for (i, k, *_), f in zip(items, feats):
                outputs[i][k] = f
        for i, feats in enumerate(outputs):
            if responses[i] is None:
                out = pb.Tensor("FEATURES", np.stack(feats).astype(np.float32))
                responses[i] = pb.InferenceResponse(output_tensors=[out])
        return responses


class GenerateModel(_WorldModelBackend):
    """wm_generate: FRAME uint8 [H,W,3], SKILL str, NUM_FRAMES, SEED, RETURN_VIDEO ->
    FEATURES fp32 [T_lat, D] and VIDEO uint8 [T,H,W,3] (0 frames unless asked).

    Requests that Triton batched together and share a frame size and frame count are sampled
    in one denoising loop (``WorldModel.generate_batch``: per-request seeds and skills, results
    equal to one-by-one sampling)."""

    def _parse(self, request) -> tuple[np.ndarray, str, int, int, bool]:
        pb = _utils()
        frame = pb.get_input_tensor_by_name(request, "FRAME").as_numpy()
        if frame.ndim == 4 and frame.shape[0] == 1:
            frame = frame[0]
        skill = self._text(pb.get_input_tensor_by_name(request, "SKILL").as_numpy())
        num_frames = int(np.asarray(self._optional(request, "NUM_FRAMES", np.array([13]))).reshape(-1)[0])
        seed = int(np.asarray(self._optional(request, "SEED", np.array([0]))).reshape(-1)[0])
        want_video = bool(np.asarray(self._optional(request, "RETURN_VIDEO", np.array([False]))).reshape(-1)[0])
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.size == 0:
            raise ValueError(f"FRAME must be [H, W, 3], got {list(frame.shape)}")
        if frame.shape[0] * frame.shape[1] > self.max_pixels or frame.shape[0] % 16 or frame.shape[1] % 16:
            raise ValueError("FRAME height/width must be multiples of 16 within the pixel limit")
        if not 1 < num_frames <= self.max_video_frames:
            raise ValueError(f"NUM_FRAMES must be in (1, {self.max_video_frames}]")
        if (num_frames - 1) % self.model.temporal_factor:
            raise ValueError(f"NUM_FRAMES must be 1 + a multiple of {self.model.temporal_factor}, got {num_frames}")
        return frame, skill, num_frames, seed, want_video

    def execute(self, requests):
        pb = _utils()
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, np.ndarray, str, int]]] = {}
        for i, request in enumerate(requests):
            try:
                frame, skill, num_frames, seed, want_video = self._parse(request)
            except ValueError as exc:
                responses[i] = self._error(str(exc), invalid=True)
                continue
            groups.setdefault((frame.shape, num_frames, want_video), []).append((i, frame, skill, seed))
        for (shape, num_frames, want_video), items in groups.items():
            try:
                results = self.model.generate_batch([f for _, f, _, _ in items], [s for *_, s, _ in items],
                                                    num_frames, [e for *_, e in items], decode=want_video)
            except Exception as exc:  # noqa: BLE001 - report, do not crash the model
                for i, *_ in items:
                    responses[i] = self._error(f"generate failed: {type(exc).__name__}: {exc}")
                continue
            for (i, *_), result in zip(items, results):
                video = result.video if want_video else np.zeros((0, *shape), np.uint8)
                responses[i] = pb.InferenceResponse(output_tensors=[
                    pb.Tensor("FEATURES", result.features[None].astype(np.float32)),
                    pb.Tensor("VIDEO", video[None].astype(np.uint8))])
        return responses
