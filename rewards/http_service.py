"""A reward function behind HTTP, speaking the same protocol as the Ray worker.

    GET  /health      -> 200 {"status": "ok", "reward_name": ..., "reward_version": ..., "reward_scale": ...}
    POST /v1/rewards  RewardRequest JSON -> 200 RewardResult JSON
                      422 {"detail": ...} for a malformed request or a reward that failed on it
                      (raised, returned NaN or the wrong number of results); not worth retrying

The service is stateless: the reward's carried state comes in `RewardRequest.state` and goes back in
`RewardResult.state`, so any replica, or a restarted one, scores a retried batch the same way.
Run it with `cxr-rl reward serve --name NAME --host 127.0.0.1 --port 8100`. See rewards/PROTOCOL.md.
"""

import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException, Request

from rewards.protocol import RewardError, RewardFunction, reward_scale, score_request
from shared.schemas import RewardRequest, RewardResult


def _reward(request: Request) -> RewardFunction:
    return request.app.state.reward


def rewards_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["rewards"])

    @router.post("/rewards", response_model=RewardResult)
    def score(body: RewardRequest, request: Request) -> RewardResult:
        # A plain `def`: FastAPI runs it in a worker thread, so scoring does not block the event loop.
        try:
            return score_request(_reward(request), body)
        except RewardError as error:
            raise HTTPException(status_code=422, detail=str(error)) from None

    return router


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health")
    def health(request: Request) -> dict[str, str | float]:
        reward = _reward(request)
        return {
            "status": "ok",
            "reward_name": str(reward.name),
            "reward_version": str(reward.version),
            "reward_scale": reward_scale(reward),
        }

    return router


def create_app(reward: RewardFunction) -> FastAPI:
    app = FastAPI(title="cxr-rl reward service", version="1")
    app.state.reward = reward
    app.include_router(rewards_router())
    app.include_router(health_router())
    return app


def serve(
    reward: RewardFunction, host: str = "127.0.0.1", port: int = 8100, log_level: str = "warning"
) -> None:
    uvicorn.run(create_app(reward), host=host, port=port, log_level=log_level)
