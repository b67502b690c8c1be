"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from rollout_server.routers.dependencies import Service

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(service: Service) -> JSONResponse:
    """Liveness, as vLLM's own server answers it: 503 once the engine has died (restart me)."""
    if service.engine_dead:
        return JSONResponse({"status": "engine dead", "error": service.not_ready_reason()}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(service: Service) -> JSONResponse:
    if service.ready:
        return JSONResponse({"ready": True})
    loading = service.startup_error is None and not service.engine_dead  # not ready yet, not failed
    return JSONResponse(
        {"ready": False, "loading": loading, "error": service.not_ready_reason()}, status_code=503
    )


@router.get("/metrics")
async def metrics(service: Service) -> Response:
    return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4")
