import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from guardwire.v1 import conversation_pb2 as _conversation_pb2
from guardwire.v1 import verdict_pb2 as _verdict_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassifyOptions(_message.Message):
    __slots__ = ("threshold", "include_category_scores")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CATEGORY_SCORES_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    include_category_scores: bool
    def __init__(self, threshold: _Optional[float] = ..., include_category_scores: _Optional[bool] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("conversation", "role", "policy", "options")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    conversation: _conversation_pb2.Conversation
    role: _conversation_pb2.Role
    policy: _conversation_pb2.Policy
    options: ClassifyOptions
    def __init__(self, conversation: _Optional[_Union[_conversation_pb2.Conversation, _Mapping]] = ..., role: _Optional[_Union[_conversation_pb2.Role, str]] = ..., policy: _Optional[_Union[_conversation_pb2.Policy, _Mapping]] = ..., options: _Optional[_Union[ClassifyOptions, _Mapping]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("verdict", "unsafe_score", "threshold", "categories", "category_scores", "assessed_role", "policy_id", "model_id", "verdict_token_mass", "timings", "truncated_turns")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    UNSAFE_SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_SCORES_FIELD_NUMBER: _ClassVar[int]
    ASSESSED_ROLE_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_TOKEN_MASS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_TURNS_FIELD_NUMBER: _ClassVar[int]
    verdict: _verdict_pb2.Verdict
    unsafe_score: float
    threshold: float
    categories: _containers.RepeatedCompositeFieldContainer[_verdict_pb2.CategoryScore]
    category_scores: _containers.RepeatedCompositeFieldContainer[_verdict_pb2.CategoryScore]
    assessed_role: _conversation_pb2.Role
    policy_id: str
    model_id: str
    verdict_token_mass: float
    timings: _verdict_pb2.Timings
    truncated_turns: int
    def __init__(self, verdict: _Optional[_Union[_verdict_pb2.Verdict, str]] = ..., unsafe_score: _Optional[float] = ..., threshold: _Optional[float] = ..., categories: _Optional[_Iterable[_Union[_verdict_pb2.CategoryScore, _Mapping]]] = ..., category_scores: _Optional[_Iterable[_Union[_verdict_pb2.CategoryScore, _Mapping]]] = ..., assessed_role: _Optional[_Union[_conversation_pb2.Role, str]] = ..., policy_id: _Optional[str] = ..., model_id: _Optional[str] = ..., verdict_token_mass: _Optional[float] = ..., timings: _Optional[_Union[_verdict_pb2.Timings, _Mapping]] = ..., truncated_turns: _Optional[int] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_turns", "max_conversation_bytes", "max_prompt_tokens", "max_categories", "max_batch_size", "max_queue")
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONVERSATION_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    max_turns: int
    max_conversation_bytes: int
    max_prompt_tokens: int
    max_categories: int
    max_batch_size: int
    max_queue: int
    def __init__(self, max_turns: _Optional[int] = ..., max_conversation_bytes: _Optional[int] = ..., max_prompt_tokens: _Optional[int] = ..., max_categories: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_queue: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_id", "revision", "family", "backend", "device", "dtype", "default_categories", "limits", "default_threshold", "template_hash", "verdict_token_ids", "policy_ids")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_HASH_FIELD_NUMBER: _ClassVar[int]
    VERDICT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_IDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    revision: str
    family: str
    backend: str
    device: str
    dtype: str
    default_categories: _containers.RepeatedCompositeFieldContainer[_conversation_pb2.Category]
    limits: Limits
    default_threshold: float
    template_hash: str
    verdict_token_ids: _containers.RepeatedScalarFieldContainer[int]
    policy_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_id: _Optional[str] = ..., revision: _Optional[str] = ..., family: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., default_categories: _Optional[_Iterable[_Union[_conversation_pb2.Category, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., default_threshold: _Optional[float] = ..., template_hash: _Optional[str] = ..., verdict_token_ids: _Optional[_Iterable[int]] = ..., policy_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Cadence(_message.Message):
    __slots__ = ("every_tokens", "at_sentence_end")
    EVERY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AT_SENTENCE_END_FIELD_NUMBER: _ClassVar[int]
    every_tokens: int
    at_sentence_end: bool
    def __init__(self, every_tokens: _Optional[int] = ..., at_sentence_end: _Optional[bool] = ...) -> None: ...

class StreamOpen(_message.Message):
    __slots__ = ("policy", "options", "cadence", "history")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CADENCE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    policy: _conversation_pb2.Policy
    options: ClassifyOptions
    cadence: Cadence
    history: _conversation_pb2.Conversation
    def __init__(self, policy: _Optional[_Union[_conversation_pb2.Policy, _Mapping]] = ..., options: _Optional[_Union[ClassifyOptions, _Mapping]] = ..., cadence: _Optional[_Union[Cadence, _Mapping]] = ..., history: _Optional[_Union[_conversation_pb2.Conversation, _Mapping]] = ...) -> None: ...

class ResponseDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class CheckNow(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndOfTurn(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamClassifyRequest(_message.Message):
    __slots__ = ("open", "turn", "delta", "check", "end_of_turn")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    END_OF_TURN_FIELD_NUMBER: _ClassVar[int]
    open: StreamOpen
    turn: _conversation_pb2.Turn
    delta: ResponseDelta
    check: CheckNow
    end_of_turn: EndOfTurn
    def __init__(self, open: _Optional[_Union[StreamOpen, _Mapping]] = ..., turn: _Optional[_Union[_conversation_pb2.Turn, _Mapping]] = ..., delta: _Optional[_Union[ResponseDelta, _Mapping]] = ..., check: _Optional[_Union[CheckNow, _Mapping]] = ..., end_of_turn: _Optional[_Union[EndOfTurn, _Mapping]] = ...) -> None: ...

class StreamClassifyResponse(_message.Message):
    __slots__ = ("sequence", "result", "turn_index", "safe_through_offset", "safe_through_token", "final", "latency")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    SAFE_THROUGH_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SAFE_THROUGH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    result: ClassifyResponse
    turn_index: int
    safe_through_offset: int
    safe_through_token: int
    final: bool
    latency: _duration_pb2.Duration
    def __init__(self, sequence: _Optional[int] = ..., result: _Optional[_Union[ClassifyResponse, _Mapping]] = ..., turn_index: _Optional[int] = ..., safe_through_offset: _Optional[int] = ..., safe_through_token: _Optional[int] = ..., final: _Optional[bool] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
