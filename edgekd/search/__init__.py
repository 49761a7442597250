"""Candidate generation, the objective J and selection."""
