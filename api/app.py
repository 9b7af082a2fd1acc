"""`build_app(async_omni, server_config)`: the FastAPI application of `omniserve serve`.

    middleware (outermost first): ApiKeyAuth -> BodySizeLimit -> FastAPI (error handlers, routes)
    routes: /v1/chat/completions (chat.py), /v1/completions (completions.py), /v1/files* (files.py),
            /v1/models, /health, /version (here), /metrics (metrics.py)

The app only talks to the engine through `AsyncOmni`; it does not own it (the caller shuts it down).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from omniserve.api import chat, completions, files, metrics
from omniserve.api.chat_content import ChatContentParser
from omniserve.api.errors import install_handlers, not_found
from omniserve.api.file_store import FileStore
from omniserve.api.middleware import ApiKeyAuth, BodySizeLimit
from omniserve.api.server_config import ServerConfig
from omniserve.api.server_state import ServerState, get_state

import omniserve
from omniserve import envs
from omniserve.async_omni import AsyncOmni


def default_model_name(async_omni: AsyncOmni) -> str:
    return async_omni.config.model.model or "omniserve-demo"


def _model_card(state: ServerState) -> dict:
    return {
        "id": state.model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "omniserve",
        "root": str(state.omni.info.model_path),
        "max_model_len": state.omni.info.max_model_len,
        "input_modalities": list(state.omni.input_modalities),
        "output_modalities": ["text"],
    }


def build_app(async_omni: AsyncOmni, server_config: ServerConfig) -> FastAPI:
    app = FastAPI(title="omniserve", version=omniserve.__version__, docs_url="/docs", redoc_url=None)
    file_store = FileStore(
        server_config.file_storage_dir or envs.cache_dir() / "files",
        server_config.max_upload_bytes,
        server_config.max_storage_bytes,
        server_config.file_ttl_s,
    )
    app.state.server = ServerState(
        omni=async_omni,
        config=server_config,
        files=file_store,
        content_parser=ChatContentParser(file_store, server_config.allow_remote_media),
        model_name=server_config.served_model_name or default_model_name(async_omni),
    )
    install_handlers(app)
    for module in (chat, completions, files, metrics):
        app.include_router(module.router)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        omni = get_state(request).omni
        if omni.is_alive:
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {"status": "error", "reason": omni.dead_reason or "engine exited"}, status_code=503
        )

    @app.get("/version")
    async def version() -> dict:
        return {"version": omniserve.__version__}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        return {"object": "list", "data": [_model_card(get_state(request))]}

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, request: Request) -> dict:
        state = get_state(request)
        if model_id != state.model_name:
            raise not_found(
                f"the model {model_id!r} does not exist; this server serves {state.model_name!r}",
                "model",
                "model_not_found",
            )
        return _model_card(state)

    app.add_middleware(
        BodySizeLimit,
        max_request_bytes=server_config.max_request_bytes,
        max_upload_bytes=server_config.max_upload_bytes,
    )
    app.add_middleware(ApiKeyAuth, api_key=server_config.api_key)  # added last = outermost
    return app
