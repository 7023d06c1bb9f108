"""The FastAPI application: OpenAI's endpoints over one pyllm Engine, plus llama.cpp's /tokenize
and /detokenize, /health and /metrics.

Every generation request becomes one engine request per choice (`n`); the handler reads their
streams asynchronously, so the event loop never waits on the model. A client that goes away
(mid-stream, or while it waits for a whole answer) cancels its requests, and the engine frees
their caches at the next step. Every failure is answered in OpenAI's error shape.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import os
import time
import uuid
from typing import Any, AsyncIterator, Sequence

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..engine import Engine, Step, Stream
from ..errors import ClosedError, ConstraintError, ContextFullError, PyllmError, QueueFullError, TemplateError
from ..model import Model
from . import protocol
from .metrics import Metrics
from .protocol import ApiError, ChatRequest, CompletionRequest, Sampling, finish_reason, parse, usage
from .structured import TextReply, plan_chat, response_constraint

DISCONNECT_POLL_SECONDS = 0.25  # how often a non-streaming request checks that its client is still there
MAX_EMBEDDING_INPUTS = 2048     # OpenAI's limit on inputs per /v1/embeddings request


def raise_if_shut_down(stream: Stream) -> None:
    """A 503 for a stream that ended because the server is shutting down (the engine cancelled it)."""
    if stream.finish_reason == "cancelled":
        raise ApiError(503, "The server is shutting down.", type="server_error")


class Server:
    """The state behind the routes: the model, its engine, the served name, metrics, health."""

    def __init__(self, model: Model, engine: Engine, model_name: str, api_key: str | None = None):
        self.model, self.engine, self.model_name = model, engine, model_name
        self.api_key = api_key.encode() if api_key else None
        self.metrics = Metrics()
        self.created = int(os.path.getmtime(model.path))
        self.ready = False          # set once the application has started, cleared at shutdown
        self.engine_failed: BaseException | None = None  # the engine's own failure: /health turns 503

    # --------------------------------------------------------------------------------------------
    # Checks shared by the routes

    async def authorize(self, request: Request) -> None:
        """401 unless the request carries the API key as a bearer token (when there is a key);
        compared in constant time."""
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key):
            raise ApiError(401, "Incorrect API key provided: pass it as 'Authorization: Bearer KEY'.",
                           code="invalid_api_key")

    def check_model(self, name: str) -> None:
        """404 for a model name other than the one served (OpenAI's answer to an unknown model)."""
        if name != self.model_name:
            raise ApiError(404, f"The model '{name}' does not exist; this server runs '{self.model_name}'.",
                           param="model", code="model_not_found")

    def error(self, exc: BaseException, prompt_param: str = "prompt", constraint_param: str | None = None) -> ApiError:
        """A pyllm or argument error as the HTTP error it stands for (a constraint that cannot be
        enforced: 400 naming `constraint_param`, the field it came from)."""
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, ConstraintError):
            return ApiError(400, f"{constraint_param}: {exc}" if constraint_param else str(exc), param=constraint_param)
        if isinstance(exc, ImportError):  # structured output without its optional extra
            return ApiError(400, f"{constraint_param}: {exc}", param=constraint_param)
        if isinstance(exc, QueueFullError):
            self.metrics.rejected["queue_full"] += 1
            return ApiError(429, f"The server is busy: {exc}. Retry later.", type="rate_limit_error",
                            code="rate_limit_exceeded", headers={"Retry-After": "1"})
        if isinstance(exc, ContextFullError):
            self.metrics.rejected["context_full"] += 1
            return ApiError(400, f"The prompt does not fit in the context: {exc}.",
                            param=prompt_param, code="context_length_exceeded")
        if isinstance(exc, TemplateError):
            return ApiError(400, f"The chat template failed on these messages: {exc}", param="messages")
        if isinstance(exc, ClosedError):
            if self.ready:  # the engine stopped on its own: it failed
                self.engine_failed = exc
            return ApiError(503, "The server is shutting down.", type="server_error")
        if isinstance(exc, ValueError):  # an option out of range: the engine's message names it
            first = str(exc).split(" ", 1)[0]
            return ApiError(400, str(exc), param=first if first in Sampling.model_fields or
                            first in ("max_tokens", "logprobs", "prompt") else None)
        return ApiError(500, f"Internal error: {type(exc).__name__}: {exc}", type="server_error")

    # --------------------------------------------------------------------------------------------
    # Generation: submit one engine request per choice, follow their streams

    def submit(self, prompts: Sequence[Sequence[int]], req: Sampling, max_tokens: int | None,
               logprobs: int | None, constraint: dict[str, Any] | None = None) -> list[Stream]:
        """n engine requests per prompt (seed + i for choice i; the prompt read once), all or none: if one is refused
        (queue full, too long, a constraint that cannot be enforced), the ones already queued are
        cancelled. `constraint`: the engine's constraint options (json_schema=, grammar=). Runs in a
        worker thread."""
        streams: list[Stream] = []
        try:
            for prompt in prompts:
                room = max(0, self.engine.n_ctx - len(prompt))  # no max_tokens: the rest of the context
                streams.extend(self.engine.submit_choices(  # n choices read the prompt once
                    prompt, req.n or 1, max_tokens=room if max_tokens is None else max_tokens,
                    logprobs=logprobs, **req.options(0), **(constraint or {})))
        except BaseException:
            for s in streams:
                s.cancel()
            raise
        return streams

    async def follow(self, stream: Stream) -> AsyncIterator[Step]:
        """A stream's steps, recording its timings and finish in the metrics; an engine failure
        becomes a 500 (and /health reports it)."""
        last_token_at = None
        outcome = "cancelled"  # unless it ends on its own below (the client went away, or shutdown)
        try:
            async for step in stream:
                if step.token is not None:
                    last_token_at = time.perf_counter()
                yield step
            if stream.finish_reason != "cancelled":
                outcome = finish_reason(stream.finish_reason)
        except Exception as exc:
            outcome = "error"
            if not self.engine.alive:  # the engine itself stopped; otherwise only this batch failed
                self.engine_failed = exc
            raise ApiError(500, f"The engine failed: {type(exc).__name__}: {exc}", type="server_error") from exc
        finally:
            stream.cancel()
            self.metrics.request_done(stream, last_token_at, outcome)

    async def merged(self, streams: list[Stream]) -> AsyncIterator[tuple[int, Step | None]]:
        """The steps of several streams as they come, as (index, step); (index, None) when stream
        `index` has ended. Closing this cancels every stream still running."""
        if len(streams) == 1:  # the common case: no queue and helper task between the engine and the client
            try:
                async with contextlib.aclosing(self.follow(streams[0])) as steps:
                    async for step in steps:
                        yield 0, step
                raise_if_shut_down(streams[0])
                yield 0, None
            finally:
                streams[0].cancel()
            return
        queue: asyncio.Queue[tuple[int, Step | None, BaseException | None]] = asyncio.Queue()

        async def pump(i: int, stream: Stream) -> None:
            try:
                async for step in self.follow(stream):
                    queue.put_nowait((i, step, None))
                queue.put_nowait((i, None, None))
            except Exception as exc:
                queue.put_nowait((i, None, exc))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        try:
            left = len(streams)
            while left:
                i, step, exc = await queue.get()
                if exc is not None:
                    raise exc
                if step is None:
                    left -= 1
                    raise_if_shut_down(streams[i])
                yield i, step
        finally:
            for s in streams:
                s.cancel()
            for t in tasks:
                t.cancel()

    async def collect(self, request: Request, streams: list[Stream]) -> list[list[Step]]:
        """Every stream's steps to the end, for a response that is not streamed; the requests are
        cancelled if the client disconnects meanwhile."""
        steps: list[list[Step]] = [[] for _ in streams]

        async def read_all() -> None:
            async with contextlib.aclosing(self.merged(streams)) as merged:
                async for i, step in merged:
                    if step is not None:
                        steps[i].append(step)

        task = asyncio.ensure_future(read_all())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
                if not task.done() and await request.is_disconnected():
                    break  # nobody will read the answer: the finally below cancels the requests
            else:
                task.result()  # an engine failure or shutdown: its ApiError
            return steps
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ApiError):
                    await task

    # --------------------------------------------------------------------------------------------
    # Token text for logprobs

    def token_entry(self, token: int, logprob: float) -> dict[str, Any]:
        """A token as chat logprobs show it: its text (bytes decoded, U+FFFD where a character is
        split between tokens), its log-probability and its UTF-8 bytes."""
        b = self.model.tokenizer.token_bytes(token)
        return {"token": b.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(b)}

    def token_text(self, token: int) -> str:
        """A token's text as completions logprobs show it (as token_entry's)."""
        return self.model.tokenizer.token_bytes(token).decode("utf-8", errors="replace")

    def chat_logprobs(self, step: Step) -> dict[str, Any]:
        """OpenAI's chat logprobs entry of one generated token."""
        assert step.token is not None and step.logprob is not None
        return {**self.token_entry(step.token, step.logprob),
                "top_logprobs": [self.token_entry(t, lp) for t, lp in step.top_logprobs or []]}

    def completion_logprobs(self, steps: Sequence[Step], offset: int) -> dict[str, Any]:
        """OpenAI's completions logprobs: tokens, their logprobs, the top alternatives as
        {text: logprob}, and each token's character offset in the text (from `offset`)."""
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for step in steps:
            if step.token is None:
                continue
            text = self.token_text(step.token)
            out["tokens"].append(text)
            out["token_logprobs"].append(step.logprob)
            out["top_logprobs"].append({self.token_text(t): lp for t, lp in step.top_logprobs or []})
            out["text_offset"].append(offset)
            offset += len(text)
        return out


def create_app(model: Model, engine: Engine, *, model_name: str, api_key: str | None = None) -> FastAPI:
    """The application serving `model` through `engine` under `model_name`; with `api_key`, every
    route but /health needs it as a bearer token. Shutting the application down closes the engine."""
    server = Server(model, engine, model_name, api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.ready = True
        try:
            yield
        finally:
            server.ready = False
            engine.close()  # running and queued requests end "cancelled"

    app = FastAPI(title="pyllm", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    auth = [Depends(server.authorize)]

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(PyllmError)
    async def pyllm_error(request: Request, exc: Exception) -> JSONResponse:
        return await api_error(request, server.error(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:  # a bug: 500, and logged
        return await api_error(request, ApiError(500, f"Internal error: {type(exc).__name__}: {exc}",
                                                 type="server_error"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await api_error(request, ApiError(400, f"invalid request: {exc.errors()[0].get('msg')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return await api_error(request, ApiError(exc.status_code, str(exc.detail), type=kind))

    async def body(request: Request) -> bytes:
        """The request body, refused with 413 past MAX_BODY_BYTES before it is all read."""
        limit = protocol.MAX_BODY_BYTES
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes")
        return bytes(data)

    # ---------------------------------------------------------------------------------- health

    @app.get("/health")
    async def health() -> JSONResponse:
        """Liveness: 200 while the engine runs, 503 once it has failed or the server shuts down."""
        if server.engine_failed is not None:
            return JSONResponse({"status": "error", "error": f"the engine failed: {server.engine_failed}"}, 503)
        if not server.ready:
            return JSONResponse({"status": "unavailable"}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        """Readiness: as /health, and 503 while the queue is full, so a load balancer sends new
        requests to another replica."""
        response = await health()
        if response.status_code != 200:
            return response
        stats = engine.stats()
        if stats.queued >= engine.max_queued:
            return JSONResponse({"status": "busy", "running": stats.running, "queued": stats.queued}, 503)
        return JSONResponse({"status": "ok", "running": stats.running, "queued": stats.queued})

    @app.get("/metrics", dependencies=auth)
    async def metrics() -> PlainTextResponse:
        """Prometheus text: the engine's counters now and the server's histograms."""
        return PlainTextResponse(server.metrics.render(engine.stats(), model_name),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---------------------------------------------------------------------------------- models

    def model_card() -> dict[str, Any]:
        """The served model as /v1/models lists it."""
        return {"id": model_name, "object": "model", "created": server.created, "owned_by": "pyllm"}

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict[str, Any]:
        """OpenAI's model list: the one model served."""
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}", dependencies=auth)
    async def one_model(name: str) -> dict[str, Any]:
        """One model by name; 404 for any other name."""
        server.check_model(name)
        return model_card()

    # ---------------------------------------------------------------------------------- chat

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request) -> Any:
        """A chat reply (n of them), streamed as server-sent events or whole."""
        req: ChatRequest = parse(ChatRequest, await body(request))
        server.check_model(req.model)
        req.check_supported()
        if req.top_logprobs is not None and not req.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs set to true", param="top_logprobs")
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        plan = plan_chat(req, model.chat_template)
        try:
            prompt = await run_in_threadpool(lambda: model.chat_prompt(plan.messages, tools=plan.template_tools))
            streams = await run_in_threadpool(server.submit, [prompt], req, max_tokens, logprobs, plan.constraint)
        except Exception as exc:
            raise server.error(exc, "messages", plan.param) from None
        replies = [plan.reply() for _ in streams]
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "chat.completion", "created": created, "model": model_name,
                "system_fingerprint": f"pyllm-{__version__}"}

        if req.stream:
            return sse(chat_events(head, streams, replies, logprobs is not None, req.include_usage, len(prompt)))

        steps = await server.collect(request, streams)
        choices = []
        for i, (stream, st, reply) in enumerate(zip(streams, steps, replies)):
            lp = {"content": [server.chat_logprobs(s) for s in st if s.token is not None]} \
                if logprobs is not None else None
            choices.append({"index": i, "message": reply.message("".join(s.text for s in st)), "logprobs": lp,
                            "finish_reason": reply.finish_reason(stream.finish_reason)})
        return {**head, "choices": choices,
                "usage": usage(len(prompt), sum(s.usage.completion_tokens for s in streams))}

    async def chat_events(head: dict[str, Any], streams: list[Stream], replies: list[TextReply],
                          logprobs: bool, include_usage: bool, n_prompt: int) -> AsyncIterator[dict[str, Any]]:
        """The chunks of a streamed chat: the role, content or tool-call deltas, each choice's
        finish, usage."""
        head = {**head, "object": "chat.completion.chunk"}
        extra = {"usage": None} if include_usage else {}

        def chunk(i: int, delta: dict[str, Any], lp: Any = None, finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}],
                    **extra}

        for i in range(len(streams)):
            yield chunk(i, {"role": "assistant", "content": ""})
        async with contextlib.aclosing(server.merged(streams)) as merged:
            async for i, step in merged:
                if step is None:
                    for delta in replies[i].deltas(None):  # text held back to the end
                        yield chunk(i, delta)
                    yield chunk(i, {}, finish=replies[i].finish_reason(streams[i].finish_reason))
                elif step.text or (logprobs and step.token is not None):
                    lp = {"content": [server.chat_logprobs(step)]} if logprobs and step.token is not None else None
                    deltas = replies[i].deltas(step.text)
                    for k, delta in enumerate(deltas or ([{}] if lp else [])):  # logprobs go with the first delta
                        yield chunk(i, delta, lp if k == 0 else None)
        if include_usage:
            yield {**head, "choices": [], "usage": usage(n_prompt, sum(s.usage.completion_tokens for s in streams))}

    # ---------------------------------------------------------------------------------- completions

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request) -> Any:
        """Completions of a prompt or a list of prompts (n each), streamed or whole."""
        req: CompletionRequest = parse(CompletionRequest, await body(request))
        server.check_model(req.model)
        req.check_supported()
        if req.echo and req.logprobs is not None:
            raise ApiError(400, "echo with logprobs (the prompt's logprobs) is not supported", param="echo")
        p = req.prompt
        if isinstance(p, str) or (p and all(isinstance(x, str) for x in p)):
            texts = [p] if isinstance(p, str) else list(p)
            prompts = await run_in_threadpool(lambda: [model.tokenize(t) for t in texts])
        elif p and isinstance(p[0], int):
            prompts = [list(p)]
        else:
            prompts = [list(x) for x in p]
        if not prompts or any(not x for x in prompts):
            raise ApiError(400, "prompt: must not be empty", param="prompt")
        n = req.n or 1
        try:
            streams = await run_in_threadpool(server.submit, prompts, req, req.max_tokens, req.logprobs,
                                              response_constraint(req.response_format))
        except Exception as exc:
            raise server.error(exc, "prompt", "response_format") from None
        echoed = [model.detokenize(x) if req.echo else "" for x in prompts for _ in range(n)]
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": model_name,
                "system_fingerprint": f"pyllm-{__version__}"}
        n_prompt = sum(len(x) for x in prompts)

        if req.stream:
            return sse(completion_events(head, streams, req.logprobs, req.include_usage, n_prompt, echoed))

        steps = await server.collect(request, streams)
        choices = []
        for i, (stream, st) in enumerate(zip(streams, steps)):
            lp = server.completion_logprobs(st, 0) if req.logprobs is not None else None
            choices.append({"index": i, "text": echoed[i] + "".join(s.text for s in st), "logprobs": lp,
                            "finish_reason": finish_reason(stream.finish_reason)})
        return {**head, "choices": choices,
                "usage": usage(n_prompt, sum(s.usage.completion_tokens for s in streams))}

    async def completion_events(head: dict[str, Any], streams: list[Stream], logprobs: int | None,
                                include_usage: bool, n_prompt: int, echoed: list[str]) -> AsyncIterator[dict[str, Any]]:
        """The chunks of streamed completions: echoed prompts, text pieces, finishes, usage."""
        extra = {"usage": None} if include_usage else {}
        offsets = [0] * len(streams)

        def chunk(i: int, text: str, lp: Any = None, finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": i, "text": text, "logprobs": lp, "finish_reason": finish}], **extra}

        for i, text in enumerate(echoed):
            if text:
                yield chunk(i, text)
        async with contextlib.aclosing(server.merged(streams)) as merged:
            async for i, step in merged:
                if step is None:
                    yield chunk(i, "", finish=finish_reason(streams[i].finish_reason))
                elif step.text or (logprobs is not None and step.token is not None):
                    lp = None
                    if logprobs is not None and step.token is not None:
                        lp = server.completion_logprobs([step], offsets[i])
                        offsets[i] += len(lp["tokens"][0])
                    yield chunk(i, step.text, lp)
        if include_usage:
            yield {**head, "choices": [], "usage": usage(n_prompt, sum(s.usage.completion_tokens for s in streams))}

    # ---------------------------------------------------------------------------------- embeddings

    @app.post("/v1/embeddings", dependencies=auth)
    async def embeddings(request: Request) -> dict[str, Any]:
        """Model.embed's vectors of the input texts, as floats or base64."""
        req: protocol.EmbeddingRequest = parse(protocol.EmbeddingRequest, await body(request))
        server.check_model(req.model)
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts:
            raise ApiError(400, "input: must not be empty", param="input")
        if not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "input: send text; token ids are not accepted by /v1/embeddings", param="input")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ApiError(400, f"input: at most {MAX_EMBEDDING_INPUTS} texts per request", param="input")
        if any(not t for t in texts):
            raise ApiError(400, "input: texts must not be empty", param="input")
        dim = model.config.dim
        if req.dimensions is not None and req.dimensions != dim:
            raise ApiError(400, f"dimensions: this model's embeddings have {dim}", param="dimensions")
        try:  # on the engine's thread, between two of its steps: one thread drives the model
            vectors = await asyncio.wrap_future(engine.call(lambda: model.embed(texts)))
            n_tokens = await run_in_threadpool(lambda: sum(len(model.tokenize(t)) for t in texts))
        except Exception as exc:
            raise server.error(exc, "input") from None
        data = []
        for i, v in enumerate(np.asarray(vectors, dtype=np.float32)):
            emb: Any = base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") \
                if req.encoding_format == "base64" else [float(x) for x in v]
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": model_name,
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}

    # ---------------------------------------------------------------------------------- tokens

    @app.post("/tokenize", dependencies=auth)
    async def tokenize(request: Request) -> dict[str, Any]:
        """Token ids of a text (with their pieces if asked), as llama.cpp's server answers."""
        req: protocol.TokenizeRequest = parse(protocol.TokenizeRequest, await body(request))
        add_bos = None if req.add_special else False  # None: BOS as the model's own rule says
        ids = await run_in_threadpool(model.tokenize, req.content, add_bos, req.parse_special)
        if not req.with_pieces:
            return {"tokens": ids}
        pieces = []
        for t in ids:
            b = model.tokenizer.token_bytes(t)
            try:
                piece: Any = b.decode("utf-8")
            except UnicodeDecodeError:  # part of a character: its bytes, as llama.cpp gives them
                piece = list(b)
            pieces.append({"id": t, "piece": piece})
        return {"tokens": pieces}

    @app.post("/detokenize", dependencies=auth)
    async def detokenize(request: Request) -> dict[str, Any]:
        """The text of token ids (control tokens as their text)."""
        req: protocol.DetokenizeRequest = parse(protocol.DetokenizeRequest, await body(request))
        try:
            return {"content": model.detokenize(req.tokens, special=True)}
        except ValueError as exc:
            raise ApiError(400, f"tokens: {exc}", param="tokens") from None

    return app


def sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """Server-sent events, one JSON object each, then `data: [DONE]` as OpenAI ends a stream; an
    error after the stream has started is sent as an event with OpenAI's error body."""
    async def lines() -> AsyncIterator[bytes]:
        try:
            async with contextlib.aclosing(events):  # closing them cancels what still runs
                async for event in events:
                    yield b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"
        except ApiError as exc:
            yield b"data: " + json.dumps(exc.body()).encode() + b"\n\n"
            return
        yield b"data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
