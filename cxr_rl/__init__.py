"""cxr-rl: SFT then GRPO for chest X-ray vision-language models, as a service split."""

__version__ = "0.1.0"
