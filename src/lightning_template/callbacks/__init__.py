"""Lightning callbacks: what a run writes beyond its scalars, and what keeps it resumable."""
