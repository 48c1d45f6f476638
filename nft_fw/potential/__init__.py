"""The potential: descriptors of atomic environments (radial and angular symmetry functions
over a neighbour list), the ensemble of Behler–Parrinello networks and its training in
JAX/Flax, per-atom uncertainty δ and its calibration, an optional physical baseline, and the
ways a trained ensemble is used — the ASE calculator and LAMMPS."""
