"""Structures: the nanoparticles a campaign targets (particles), the initial bulk cells,
spherical chunks cut around an atom and their content hash, and exact atoms ⇄ document and
extended-XYZ conversion."""
