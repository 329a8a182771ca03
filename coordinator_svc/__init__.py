"""Control plane: learns workers, claims due tasks, hands them out, records outcomes, recovers."""
