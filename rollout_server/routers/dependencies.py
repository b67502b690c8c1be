"""Dependencies shared by the routers: the service, and the bearer-token check."""

import hmac
from typing import Annotated

from fastapi import Depends, Request

from rollout_server.errors import RequestError
from rollout_server.service import RolloutService


def get_service(request: Request) -> RolloutService:
    return request.app.state.service


def get_ready_service(request: Request) -> RolloutService:
    service: RolloutService = request.app.state.service
    if not service.ready:
        raise RequestError(503, "server", service.not_ready_reason())
    return service


def require_token(request: Request) -> None:
    token = request.app.state.service.config.api_token
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise RequestError(401, "authorization", "missing bearer token")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise RequestError(401, "authorization", "wrong bearer token")


def require_admin(request: Request) -> None:
    """Adapter loads and deletes: closed unless the server has a key, and then only with it."""
    if not request.app.state.service.config.api_token:
        raise RequestError(
            403,
            "authorization",
            "adapter changes are off on this server: start it with --api-key KEY (or CXR_RL_API_KEY) and "
            "send that key as a bearer token",
        )
    require_token(request)


Service = Annotated[RolloutService, Depends(get_service)]
ReadyService = Annotated[RolloutService, Depends(get_ready_service)]
