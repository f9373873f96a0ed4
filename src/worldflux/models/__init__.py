"""Built-in world-model families (importing this registers them)."""
