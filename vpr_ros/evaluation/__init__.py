"""Evaluation: Recall@N against ground-truth poses, loop-closure precision/recall, reports."""
