"""POST /v1/rollouts: G sampled completions per X-ray, with token ids, logprobs and the adapter
version that produced them."""

from fastapi import APIRouter, Depends

from rollout_server.routers.dependencies import ReadyService, require_token
from shared.schemas import RolloutRequest, RolloutResponse, ServerInfo

router = APIRouter(prefix="/v1", tags=["rollouts"], dependencies=[Depends(require_token)])


@router.post("/rollouts", response_model=RolloutResponse)
async def rollouts(request: RolloutRequest, service: ReadyService) -> RolloutResponse:
    return await service.rollouts(request)


@router.get("/info", response_model=ServerInfo)
async def info(service: ReadyService) -> ServerInfo:
    """The model, platform and image attention mode a trainer must reproduce."""
    return service.info()
