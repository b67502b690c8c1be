"""Ray placement and the driver: ties rollout replicas, the reward worker and the trainer together."""
