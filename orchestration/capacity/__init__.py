"""Capacity plan: memory, FLOPs and step time of a recipe's training step per GPU (rglcd-plan)."""
