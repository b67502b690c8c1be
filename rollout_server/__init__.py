"""The inference half of the service split: a vLLM engine behind an HTTP API that samples G
completions per X-ray and hot-loads LoRA adapters by version."""
