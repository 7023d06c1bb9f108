"""The OpenAI API as pyllm serves it: request bodies (pydantic, strict: a string where a number
belongs is an error, not a conversion), and the error shape every failure is answered in.

Fields OpenAI defines that change nothing here (`user`, `metadata`, `store`, ...) are accepted and
ignored; fields whose meaning pyllm cannot honour (the deprecated `functions`, `audio`, `suffix`,
...) are refused with 400 rather than silently dropped; any other field is refused as
OpenAI refuses it ("Unrecognized request argument"). Beyond OpenAI, the llama.cpp-style sampling
options `top_k`, `min_p`, `repeat_penalty` and `repeat_last_n` are accepted.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_N = 16            # choices per request (each is a request to the engine)
MAX_STOP = 16         # stop strings per request
MAX_BODY_BYTES = 8 << 20  # a request body larger than this is refused (413) before it is parsed

# OpenAI fields pyllm cannot honour: refused unless they ask for nothing (None, [], or the value given)
UNSUPPORTED_UNLESS = {"functions": [], "function_call": "none", "audio": None, "prediction": None,
                      "web_search_options": None, "modalities": ["text"], "suffix": "", "best_of": 1}

# what a field of several shapes must be, for error messages (pydantic lists every union member)
SHAPES = {
    "prompt": "a string, a list of strings, a list of token ids or a list of lists of token ids",
    "input": "a string, a list of strings, a list of token ids or a list of lists of token ids",
    "stop": "a string or a list of strings",
    "content": "a string or a list of text parts",
    "messages": "a list of {role, content} messages",
    "tool_choice": '"none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
}


class ApiError(Exception):
    """A failure answered as OpenAI answers it: status, and {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class Strict(BaseModel):
    """A request object: unknown fields and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(Strict):
    """`stream_options`: whether a stream ends with a usage chunk."""

    include_usage: Optional[bool] = None
    include_obfuscation: Optional[bool] = None  # OpenAI's padding against side channels: not needed here


class Sampling(Strict):
    """What every generation request shares: OpenAI's sampling fields and pyllm's additions."""

    model: str
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    logit_bias: Optional[dict[str, float]] = None
    n: Optional[int] = Field(None, ge=1, le=MAX_N)
    seed: Optional[int] = Field(None, ge=-(1 << 63), lt=1 << 63)
    stop: Union[str, list[str], None] = None
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = None
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    # llama.cpp's and vLLM's additions
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    repeat_penalty: Optional[float] = Field(None, gt=0)
    repeat_last_n: Optional[int] = Field(None, ge=0)
    # OpenAI fields that change nothing here: accepted, ignored (best_of: see UNSUPPORTED_UNLESS)
    user: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    safety_identifier: Any = None
    prompt_cache_key: Any = None
    prompt_cache_retention: Any = None
    best_of: Any = None

    def options(self, index: int) -> dict[str, Any]:
        """Engine options for choice `index` (seed + index, so n choices differ but repeat)."""
        top_p = 1.0 if self.top_p is None else self.top_p
        temperature = 1.0 if self.temperature is None else self.temperature
        if top_p == 0:  # OpenAI reads top_p=0 as "only the most likely token"
            temperature, top_p = 0.0, 1.0
        bias = None
        if self.logit_bias:
            bias = {}
            for key, value in self.logit_bias.items():
                try:
                    bias[int(key)] = value
                except ValueError:
                    raise ApiError(400, f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP:
            raise ApiError(400, f"at most {MAX_STOP} stop strings, got {len(stops)}", param="stop")
        opts: dict[str, Any] = dict(
            temperature=temperature, top_p=top_p, top_k=self.top_k or 0, min_p=self.min_p or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0, presence_penalty=self.presence_penalty or 0.0,
            logit_bias=bias, stop=stops)
        if self.repeat_penalty is not None:
            opts["repeat_penalty"] = self.repeat_penalty
        if self.repeat_last_n is not None:
            opts["repeat_last_n"] = self.repeat_last_n
        if self.seed is not None:  # the sampler's seeds are non-negative: any int64, wrapped
            opts["seed"] = (self.seed + index) % (1 << 64)
        return opts

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def check_supported(self) -> None:
        """ApiError 400 for a field pyllm cannot honour (see UNSUPPORTED_UNLESS)."""
        for name, allowed in UNSUPPORTED_UNLESS.items():
            value = getattr(self, name, None)
            if value is not None and value != allowed and not (name == "best_of" and value == self.n):
                raise ApiError(400, f"{name} is not supported by this server", param=name)


class TextPart(Strict):
    """A text part of a message's content (the only kind a text model reads)."""

    type: Literal["text"]
    text: str


class FunctionCall(Strict):
    """The function a past tool call called, and its arguments (JSON text)."""

    name: str
    arguments: str


class ToolCall(Strict):
    """A tool call in an assistant message of the history."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(Strict):
    """One chat message: a system, user or assistant turn, an assistant turn's tool calls, or a
    tool's result (role "tool", with the id of the call it answers)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None
    # what OpenAI's own reply messages carry, when a client sends one back: accepted, ignored if empty
    refusal: Any = None
    annotations: Any = None
    audio: Any = None
    function_call: Any = None

    @property
    def text(self) -> str:
        """The content as one string."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])

    def as_dict(self) -> dict[str, str]:
        """The message as a chat template reads it (OpenAI's "developer" is the system role)."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text}


class JsonSchemaFormat(Strict):
    """`response_format.json_schema`: the schema the reply must fit, with its name."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(Strict):
    """`response_format`: free text, any JSON object, or JSON that fits a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None


class FunctionDefinition(Strict):
    """A function the model may call: its name, what it does, its arguments' JSON Schema."""

    name: str
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(Strict):
    """One entry of `tools` (functions are the only kind)."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Strict):
    """The function `tool_choice` names."""

    name: str


class NamedToolChoice(Strict):
    """`tool_choice` naming one function the reply must call."""

    type: Literal["function"]
    function: NamedFunction


class ChatRequest(Sampling):
    """The body of /v1/chat/completions."""

    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=0)
    max_completion_tokens: Optional[int] = Field(None, ge=0)
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    response_format: Optional[ResponseFormat] = None
    tools: Optional[list[Tool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    # refused unless they ask for nothing (UNSUPPORTED_UNLESS), or ignored
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    modalities: Any = None
    verbosity: Any = None
    reasoning_effort: Any = None


class CompletionRequest(Sampling):
    """The body of /v1/completions."""

    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(16, ge=0)  # OpenAI's default for completions
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    echo: Optional[bool] = None
    response_format: Optional[ResponseFormat] = None
    suffix: Any = None


class EmbeddingRequest(Strict):
    """The body of /v1/embeddings."""

    model: str
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Optional[Literal["float", "base64"]] = None
    dimensions: Optional[int] = None
    user: Any = None


class TokenizeRequest(Strict):
    """The body of /tokenize (llama.cpp's server's fields)."""

    content: str
    add_special: bool = False    # llama.cpp's defaults: no BOS, control-token text parsed
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(Strict):
    """The body of /detokenize."""

    tokens: list[int]


def parse(cls: type[Strict], body: bytes) -> Any:
    """The request body as `cls`, or ApiError 400 naming the first bad field (OpenAI's shape)."""
    try:
        return cls.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> ApiError:
    """One readable 400 from pydantic's errors: the first one, with its top-level field as param."""
    err = exc.errors()[0]
    if err["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON ({err['msg']})")
    if err["type"] == "model_type" and not err["loc"]:
        return ApiError(400, "the request body must be a JSON object")
    loc = [str(x) for x in err["loc"]]
    param = loc[0] if loc else None
    if err["type"] == "extra_forbidden":
        return ApiError(400, f"Unrecognized request argument supplied: {'.'.join(loc)}", param=param)
    if err["type"] == "missing":
        return ApiError(400, f"Missing required parameter: '{'.'.join(loc)}'", param=param)
    # a field of several shapes (a union): pydantic's location goes on with the member it tried
    k = max((i for i, name in enumerate(loc[:-1]) if name in SHAPES), default=None)
    member = k is not None and k + 1 < len(loc) and loc[k + 1].startswith("literal[")  # a union's literal member
    if k is not None and (err["type"].endswith("_type") or member):
        return ApiError(400, f"{'.'.join(loc[:k + 1])}: must be {SHAPES[loc[k]]}", param=param)
    where = ".".join(loc)
    return ApiError(400, f"{where}: {err['msg']}", param=param)


FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}


def finish_reason(engine_reason: str | None) -> str:
    """The engine's finish reason as OpenAI's: "stop" (end of text, stop string) or "length"
    (max_tokens, or the context full)."""
    return FINISH_REASONS.get(engine_reason or "", "stop")


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
