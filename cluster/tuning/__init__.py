"""The sweet-spot search: the search space, the CPU budget, and choosing among measured variants."""
