"""Reward functions for GRPO on chest X-ray labels (`hard`, `nuanced`), the completion parser they
share (`rewards.parsing`), and the workers that serve them to the trainer: a Ray actor
(`rewards.worker`), an HTTP service (`rewards.http_service`), the client (`rewards.client`) and the
router that swaps rewards while training runs (`rewards.router`). See rewards/PROTOCOL.md.

Nothing is imported here, so `cxr-rl --help` stays quick: import from the submodules.
"""
