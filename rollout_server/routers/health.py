"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from rollout_server.routers.dependencies import Service

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready")
async def ready(service: Service) -> JSONResponse:
    if service.ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "error": service.startup_error}, status_code=503)


@router.get("/metrics")
async def metrics(service: Service) -> Response:
    return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4")
