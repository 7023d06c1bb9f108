"""pyllm's OpenAI-compatible HTTP server (`pyllm serve`): FastAPI routes over one Engine.

    protocol.py  the requests (pydantic, strict) and the OpenAI-shaped responses and errors
    metrics.py   counters and histograms in Prometheus' text format
    app.py       the FastAPI application: routes, authentication, streaming, error handlers
    command.py   the `pyllm serve` command: load the model, start the engine, run uvicorn

Only command.py is imported by the `pyllm` command; the rest needs the `server` extra
(`pip install 'pyllm[server]'`: FastAPI, uvicorn, pydantic).
"""
