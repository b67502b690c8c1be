"""POST /v1/rollouts: G sampled completions per X-ray, with token ids, logprobs and the adapter
version that produced them."""

from fastapi import APIRouter, Depends

from rollout_server.routers.dependencies import ReadyService, require_token
from shared.schemas import RolloutRequest, RolloutResponse

router = APIRouter(prefix="/v1", tags=["rollouts"], dependencies=[Depends(require_token)])


@router.post("/rollouts", response_model=RolloutResponse)
async def rollouts(request: RolloutRequest, service: ReadyService) -> RolloutResponse:
    return await service.rollouts(request)
