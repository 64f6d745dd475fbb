"""What `ray job submit` runs: `python -m jobs <spec.yaml> [--set k=v ...] [--output DIR]`."""
