"""Serve a model over an OpenAI-compatible HTTP API.

    pyllm serve [MODEL] [--host 127.0.0.1] [--port 8080] [--parallel N] [--api-key KEY] ...

MODEL is a weights.bin or a known model's name, as for `pyllm run` (default smollm2). One process
holds the model once and runs many requests at a time through the engine (continuous batching);
Ctrl-C or SIGTERM stops taking connections, gives running requests GRACE_SECONDS to finish, then
cancels the rest and exits. Needs the server extra: pip install 'pyllm[server]'.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from ..errors import PyllmError, describe
from ..fetch import DEFAULT_MODEL, KNOWN_MODELS, add_model_arguments, model_path, use_mmap

DESCRIPTION = __doc__.split("\n\n")[0]
GRACE_SECONDS = 10       # after Ctrl-C / SIGTERM, how long running requests may take to finish
KV_TYPES = ("f32", "f16")
API_KEY_ENV = "PYLLM_API_KEY"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The command's arguments: model, address, engine limits, authentication."""
    add_model_arguments(ap)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                                                        "0.0.0.0 for every interface)")
    ap.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    ap.add_argument("--model-name", help="the model name clients send (default: MODEL's name, or the "
                                         "file name without its extension)")
    ap.add_argument("--parallel", type=int, default=8, help="requests generated at once (default 8)")
    ap.add_argument("--max-queued", type=int, default=64,
                    help="requests waiting beyond those; more are refused with 429 (default 64)")
    ap.add_argument("--ctx", type=int, default=None,
                    help="context of one request in tokens, prompt and completion (default: the model's own)")
    ap.add_argument("--kv-budget", type=float, default=None, metavar="MIB",
                    help="KV cache memory all running requests share, in MiB, taken at start "
                         "(default: --parallel full contexts, at most 1024)")
    ap.add_argument("--kv-type", choices=KV_TYPES, default="f32", help="KV cache element type (default f32)")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--api-key", default=None,
                    help=f"require 'Authorization: Bearer KEY' on every route but /health "
                         f"(default: ${API_KEY_ENV} if set, else no key)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no startup lines or request log")


def served_name(known: str | None, path: str) -> str:
    """The model's name in the API: the known name it was given by, or the file's stem."""
    if known is not None:
        return known
    name = os.path.basename(path)
    return name[:-4] if name.endswith(".bin") else name


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Engine's keyword arguments from the command line."""
    opts: dict[str, Any] = dict(max_running=args.parallel, max_queued=args.max_queued, kv_type=args.kv_type)
    if args.kv_budget is not None:
        if not args.kv_budget > 0:
            raise PyllmError(f"--kv-budget must be a positive number of MiB, got {args.kv_budget}")
        opts["kv_budget"] = int(args.kv_budget * (1 << 20))
    return opts


def run(args: argparse.Namespace) -> int:
    """The command, on parsed arguments; returns the exit status."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        print(f"pyllm serve: the server needs its extra ({exc.name} is missing): pip install 'pyllm[server]'",
              file=sys.stderr)
        return 1
    from ..engine import Engine
    from ..model import Model

    try:
        path, known = args.model, None
        if path is None or (not os.path.exists(path) and path in KNOWN_MODELS):
            known = path or DEFAULT_MODEL
            path = str(model_path(known, quiet=args.quiet))
        elif not os.path.exists(path):
            raise PyllmError(f"{path}: no such file")
        if not 0 <= args.port < 65536:
            raise PyllmError(f"--port must be in 0..65535, got {args.port}")
        api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
        opts = engine_options(args)
        model = Model(path, n_threads=args.threads, n_ctx=args.ctx, use_mmap=use_mmap(args))
    except (PyllmError, ValueError, OSError) as exc:
        print(f"pyllm serve: {describe(exc)}", file=sys.stderr)
        return 1
    with model:
        try:
            engine = Engine(model, **opts)
        except (PyllmError, ValueError) as exc:
            print(f"pyllm serve: {describe(exc)}", file=sys.stderr)
            return 1
        name = args.model_name or served_name(known, path)
        app = create_app(model, engine, model_name=name, api_key=api_key)
        if not args.quiet:
            print(f"pyllm serve: {name} ({os.path.basename(path)}, {model.n_threads} threads, {model.kernels} "
                  f"kernels): {engine.max_running} requests at a time, {engine.n_ctx} tokens each, "
                  f"{engine.kv_budget / (1 << 20):.0f} MiB of KV cache; "
                  f"{'API key required' if api_key else 'no API key'}", file=sys.stderr, flush=True)
        if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"pyllm serve: warning: listening on {args.host} without an API key: anyone who reaches "
                  f"this port can use the model (--api-key)", file=sys.stderr, flush=True)
        config = uvicorn.Config(app, host=args.host, port=args.port, timeout_graceful_shutdown=GRACE_SECONDS,
                                log_level="warning" if args.quiet else "info", access_log=not args.quiet)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
        # handler it found: let that end the command normally rather than kill the process.
        previous = signal.signal(signal.SIGTERM, _stopped)
        try:
            uvicorn.Server(config).run()
        except (KeyboardInterrupt, _Stopped):
            pass
        except SystemExit as exc:  # uvicorn could not start (it logged why: the port in use, ...)
            if exc.code:
                print(f"pyllm serve: could not serve on {args.host}:{args.port}", file=sys.stderr)
                return 1
        finally:
            signal.signal(signal.SIGTERM, previous)
            engine.close()
    return 0


class _Stopped(Exception):
    """SIGTERM arrived (after uvicorn's graceful shutdown)."""


def _stopped(signum: int, frame: Any) -> None:
    raise _Stopped()
