"""trainer/grpo: see the modules."""
