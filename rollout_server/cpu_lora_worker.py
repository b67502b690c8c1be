"""vLLM's CPU worker with the grouped LoRA ops of `rollout_server.cpu_lora` in place.

On CPU the server names this class as vLLM's `worker_cls` (`EngineConfig.cpu_lora_ops: grouped`,
see `rollout_server.engine.engine_args`). vLLM imports it inside the engine's worker process, where
the model runs, so the ops are installed there before the first forward pass; the server process
never imports it (it loads vLLM's worker). `worker_extension_cls` stays free for the methods
mixed into whichever worker runs (`rollout_server.worker_probe`).
"""

from typing import Any

from vllm.v1.worker.cpu_worker import CPUWorker

from rollout_server import cpu_lora


class GroupedLoraCpuWorker(CPUWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cxr_rl_lora_ops_installed = cpu_lora.install()

    def cxr_rl_lora_ops(self) -> str:
        """What `cpu_lora.install()` did in this worker, in words (`collective_rpc("cxr_rl_lora_ops")`)."""
        return self.cxr_rl_lora_ops_installed
