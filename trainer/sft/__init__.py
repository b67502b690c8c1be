"""trainer/sft: see the modules."""
