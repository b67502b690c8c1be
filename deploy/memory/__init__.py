"""deploy/memory: see the modules."""
