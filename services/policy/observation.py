"""The gRPC wire format -> a ``service.RobotStep``: decode the images and the simulator's oracle,
rejecting malformed bytes with the field named. What the step must satisfy (state size,
instruction, cameras) is checked by ``PolicyService`` for every transport alike."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from services.policy.service import InvalidRequest, RobotStep
from w2a_client.proto.w2a.v1 import policy_pb2 as pb
from w2a_models.base_policy import PolicySpec

MAX_PIXELS = 4096 * 4096
LOGGED_ENCODINGS = {pb.IMAGE_ENCODING_JPEG: "jpeg", pb.IMAGE_ENCODING_PNG: "png"}


def decode_image(image: pb.Image, expected_hw: tuple[int, int], field: str) -> np.ndarray:
    h, w = expected_hw
    if image.encoding == pb.IMAGE_ENCODING_RAW:
        channels = image.channels or 3
        if (image.height, image.width, channels) != (h, w, 3):
            raise InvalidRequest(field, f"raw image is {image.height}x{image.width}x{channels}, "
                                        f"expected {h}x{w}x3")
        if len(image.data) != h * w * 3:
            raise InvalidRequest(field, f"raw image has {len(image.data)} bytes, expected {h * w * 3}")
        return np.frombuffer(image.data, dtype=np.uint8).reshape(h, w, 3)
    if image.encoding in (pb.IMAGE_ENCODING_JPEG, pb.IMAGE_ENCODING_PNG):
        try:
            with PILImage.open(io.BytesIO(image.data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise InvalidRequest(field, "encoded image is too large")
                if (img.height, img.width) != (h, w):
                    raise InvalidRequest(field, f"image is {img.height}x{img.width}, expected {h}x{w}")
                return np.asarray(img.convert("RGB"), dtype=np.uint8)
        except InvalidRequest:
            raise
        except (UnidentifiedImageError, OSError, ValueError, PILImage.DecompressionBombError) as exc:
            raise InvalidRequest(field, f"cannot decode image ({exc.__class__.__name__})") from None
    raise InvalidRequest(field, "encoding must be RAW, JPEG or PNG")


def parse_request(req: pb.ActRequest, spec: PolicySpec, received: float) -> RobotStep:
    """An ActRequest as a step (``received``: when the transport had it, for the latency metric)."""
    by_camera = {}
    for i, image in enumerate(req.observation.images):
        if image.camera in by_camera:
            raise InvalidRequest(f"observation.images[{i}].camera", f"{image.camera!r} given twice")
        by_camera[image.camera] = (i, image)
    images, sent = {}, {}
    for cam in spec.cameras:
        if cam.name not in by_camera:
            if len(spec.cameras) == 1 and len(req.observation.images) == 1 and not req.observation.images[0].camera:
                by_camera[cam.name] = (0, req.observation.images[0])  # a single unnamed image is the camera
            else:
                raise InvalidRequest("observation.images", f"missing camera {cam.name!r}")
        i, image = by_camera[cam.name]
        images[cam.name] = decode_image(image, (cam.height, cam.width), f"observation.images[{i}]")
        if image.encoding != pb.IMAGE_ENCODING_RAW:  # validated by the decode: log it as it came
            sent[cam.name] = (LOGGED_ENCODINGS[image.encoding], image.data)
    return RobotStep(robot_id=req.robot_id, episode_id=req.episode_id, step=req.step, instruction=req.instruction,
                     images=images, state=np.asarray(req.observation.state, dtype=np.float32), skill=req.skill,
                     session_id=req.session_id, base_only=req.base_only, evaluation=req.evaluation,
                     client_time=req.client_time, sent=sent, oracle=parse_oracle(req, spec), received=received)


def parse_oracle(req: pb.ActRequest, spec: PolicySpec) -> dict[str, np.ndarray]:
    """The simulator's oracle as ``StepRecord`` fields (``expert_actions`` [M, A], ``expert_future``
    [M + 1, H, W, 3]); empty when the robot sent none.

    Never used for acting; logged for the trainer's oracle modes (see ``SimOracle`` in the proto)."""
    if not req.HasField("oracle"):
        return {}
    oracle = req.oracle
    out: dict[str, np.ndarray] = {}
    if oracle.expert_actions:
        actions = np.asarray(oracle.expert_actions, dtype=np.float32)
        if actions.size != spec.chunk_size * spec.action_dim:
            raise InvalidRequest("oracle.expert_actions", f"has {actions.size} values, expected "
                                 f"{spec.chunk_size} x {spec.action_dim}")
        if not np.all(np.isfinite(actions)):
            raise InvalidRequest("oracle.expert_actions", "contains NaN or Inf")
        out["expert_actions"] = actions.reshape(spec.chunk_size, spec.action_dim)
    if oracle.future_frames:
        first = oracle.future_frames[0]
        hw = (first.height, first.width)
        frames = [decode_image(img, hw, f"oracle.future_frames[{i}]")
                  for i, img in enumerate(oracle.future_frames)]
        if len(frames) != spec.chunk_size + 1:
            raise InvalidRequest("oracle.future_frames", f"has {len(frames)} frames, expected "
                                 f"chunk size + 1 = {spec.chunk_size + 1}")
        out["expert_future"] = np.stack(frames)
    return out
