"""Training: the loop and its exact resume, DDP over processes, and how a rule starts it."""
