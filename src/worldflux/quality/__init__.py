"""Quality gates for runs, saved models and families (``worldflux verify``)."""
