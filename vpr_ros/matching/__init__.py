"""Matching: ranking places for a query, and loop-closure acceptance."""
