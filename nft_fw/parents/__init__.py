"""Parents: the reference calculators that label structures (EMT, GPAW, and registered
ones), their settings hash and retry policy (parent), and one parent calculation shared by
the MPI ranks of a worker (parallel)."""
