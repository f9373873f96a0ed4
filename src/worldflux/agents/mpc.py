"""Model-predictive control agent over an ensemble world model (being written)."""
