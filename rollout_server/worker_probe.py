"""Methods mixed into vLLM's worker (`worker_extension_cls`), so that the server can ask the running
engine what it chose, by name through `collective_rpc` (a name crosses every executor; a function
would need vLLM's insecure pickle serialisation). Imported inside vLLM's worker process: keep it
free of the project's heavy imports."""

from typing import Any


class WorkerProbe:
    def cxr_rl_attention_layers(self) -> list[list[Any]]:
        """For each decoder attention layer of the loaded model (vLLM's `Attention` of type decoder):
        [name, the backend vLLM selected for it, whether that backend attends bidirectionally within
        an image (`supports_mm_prefix`), whether the model asks for that (`use_mm_prefix`: Gemma 3's
        image blocks)]."""
        # vLLM's internals: imported inside the engine's worker process, where this runs
        from vllm.model_executor.layers.attention.attention import Attention

        return [
            [name, module.attn_backend.get_name(), bool(module.attn_backend.supports_mm_prefix()),
             bool(module.use_mm_prefix)]
            for name, module in self.get_model().named_modules()  # type: ignore[attr-defined]
            # the language model's layers (an encoder's would say nothing about image tokens)
            if isinstance(module, Attention) and module.attn_type == "decoder"
        ]  # fmt: skip
