"""The training half of the service split: SFT and GRPO with LoRA on PyTorch + transformers + PEFT."""
