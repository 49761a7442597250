"""Teacher and student networks: one parametric family, counting, and safe checkpoint I/O."""
