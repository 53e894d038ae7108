from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_JPEG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_RAW: ImageEncoding
IMAGE_ENCODING_JPEG: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding

class Image(_message.Message):
    __slots__ = ("camera", "encoding", "data", "height", "width", "channels")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    camera: str
    encoding: ImageEncoding
    data: bytes
    height: int
    width: int
    channels: int
    def __init__(self, camera: _Optional[str] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., data: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("images", "state")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    state: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., state: _Optional[_Iterable[float]] = ...) -> None: ...

class SimOracle(_message.Message):
    __slots__ = ("expert_actions", "future_frames")
    EXPERT_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    FUTURE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    expert_actions: _containers.RepeatedScalarFieldContainer[float]
    future_frames: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, expert_actions: _Optional[_Iterable[float]] = ..., future_frames: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class ActRequest(_message.Message):
    __slots__ = ("robot_id", "session_id", "episode_id", "step", "observation", "instruction", "skill", "client_time", "base_only", "episode_end", "success", "evaluation", "oracle")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    SKILL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TIME_FIELD_NUMBER: _ClassVar[int]
    BASE_ONLY_FIELD_NUMBER: _ClassVar[int]
    EPISODE_END_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    ORACLE_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    session_id: str
    episode_id: str
    step: int
    observation: Observation
    instruction: str
    skill: str
    client_time: float
    base_only: bool
    episode_end: bool
    success: bool
    evaluation: bool
    oracle: SimOracle
    def __init__(self, robot_id: _Optional[str] = ..., session_id: _Optional[str] = ..., episode_id: _Optional[str] = ..., step: _Optional[int] = ..., observation: _Optional[_Union[Observation, _Mapping]] = ..., instruction: _Optional[str] = ..., skill: _Optional[str] = ..., client_time: _Optional[float] = ..., base_only: _Optional[bool] = ..., episode_end: _Optional[bool] = ..., success: _Optional[bool] = ..., evaluation: _Optional[bool] = ..., oracle: _Optional[_Union[SimOracle, _Mapping]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_ms", "base_ms", "residual_ms", "server_ms", "batch_size")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    BASE_MS_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    base_ms: float
    residual_ms: float
    server_ms: float
    batch_size: int
    def __init__(self, queue_ms: _Optional[float] = ..., base_ms: _Optional[float] = ..., residual_ms: _Optional[float] = ..., server_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ActResponse(_message.Message):
    __slots__ = ("chunk_size", "action_dim", "actions", "base_actions", "residual_actions", "policy_version", "fallback", "fallback_reason", "timings", "step", "base_only", "episode_ended")
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    ACTION_DIM_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    BASE_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BASE_ONLY_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ENDED_FIELD_NUMBER: _ClassVar[int]
    chunk_size: int
    action_dim: int
    actions: _containers.RepeatedScalarFieldContainer[float]
    base_actions: _containers.RepeatedScalarFieldContainer[float]
    residual_actions: _containers.RepeatedScalarFieldContainer[float]
    policy_version: int
    fallback: bool
    fallback_reason: str
    timings: Timings
    step: int
    base_only: bool
    episode_ended: bool
    def __init__(self, chunk_size: _Optional[int] = ..., action_dim: _Optional[int] = ..., actions: _Optional[_Iterable[float]] = ..., base_actions: _Optional[_Iterable[float]] = ..., residual_actions: _Optional[_Iterable[float]] = ..., policy_version: _Optional[int] = ..., fallback: _Optional[bool] = ..., fallback_reason: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., step: _Optional[int] = ..., base_only: _Optional[bool] = ..., episode_ended: _Optional[bool] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CameraInfo(_message.Message):
    __slots__ = ("name", "height", "width")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    height: int
    width: int
    def __init__(self, name: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_instruction_chars", "action_low", "action_high", "residual_max_norm", "max_batch", "max_wait_ms")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTRUCTION_CHARS_FIELD_NUMBER: _ClassVar[int]
    ACTION_LOW_FIELD_NUMBER: _ClassVar[int]
    ACTION_HIGH_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_MAX_NORM_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_instruction_chars: int
    action_low: _containers.RepeatedScalarFieldContainer[float]
    action_high: _containers.RepeatedScalarFieldContainer[float]
    residual_max_norm: float
    max_batch: int
    max_wait_ms: float
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_instruction_chars: _Optional[int] = ..., action_low: _Optional[_Iterable[float]] = ..., action_high: _Optional[_Iterable[float]] = ..., residual_max_norm: _Optional[float] = ..., max_batch: _Optional[int] = ..., max_wait_ms: _Optional[float] = ...) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ("action_dim", "chunk_size", "state_dim", "cameras", "base_policy", "residual_version", "kept_versions", "limits", "conventions")
    ACTION_DIM_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    STATE_DIM_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    BASE_POLICY_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_VERSION_FIELD_NUMBER: _ClassVar[int]
    KEPT_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CONVENTIONS_FIELD_NUMBER: _ClassVar[int]
    action_dim: int
    chunk_size: int
    state_dim: int
    cameras: _containers.RepeatedCompositeFieldContainer[CameraInfo]
    base_policy: str
    residual_version: int
    kept_versions: _containers.RepeatedScalarFieldContainer[int]
    limits: Limits
    conventions: str
    def __init__(self, action_dim: _Optional[int] = ..., chunk_size: _Optional[int] = ..., state_dim: _Optional[int] = ..., cameras: _Optional[_Iterable[_Union[CameraInfo, _Mapping]]] = ..., base_policy: _Optional[str] = ..., residual_version: _Optional[int] = ..., kept_versions: _Optional[_Iterable[int]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., conventions: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class WeightManifest(_message.Message):
    __slots__ = ("version", "parent_version", "sha256", "byte_length", "tensors", "config_json")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BYTE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    version: int
    parent_version: int
    sha256: str
    byte_length: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    config_json: str
    def __init__(self, version: _Optional[int] = ..., parent_version: _Optional[int] = ..., sha256: _Optional[str] = ..., byte_length: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., config_json: _Optional[str] = ...) -> None: ...

class WeightChunk(_message.Message):
    __slots__ = ("manifest", "data")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    manifest: WeightManifest
    data: bytes
    def __init__(self, manifest: _Optional[_Union[WeightManifest, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UpdateResult(_message.Message):
    __slots__ = ("accepted", "version", "previous_version", "message", "load_ms")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    version: int
    previous_version: int
    message: str
    load_ms: float
    def __init__(self, accepted: _Optional[bool] = ..., version: _Optional[int] = ..., previous_version: _Optional[int] = ..., message: _Optional[str] = ..., load_ms: _Optional[float] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class RollbackResult(_message.Message):
    __slots__ = ("version", "previous_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    previous_version: int
    def __init__(self, version: _Optional[int] = ..., previous_version: _Optional[int] = ...) -> None: ...
