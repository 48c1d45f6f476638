# GPAW build configuration used by scripts/bootstrap.sh (GPAW_CONFIG=...).
# mpi = False: a machine with an mpicc/mpic++ wrapper but without MPI headers
# otherwise fails with "mpi.h: No such file or directory". Workers that need
# MPI-parallel GPAW install an MPI build on their cluster instead.
# fftw/blas listed explicitly: without them GPAW silently builds a crippled
# extension (no FFTW, reference BLAS) or fails to link.
mpi = False
compiler = "g++"
fftw = True
libraries += ["fftw3", "blas"]  # noqa: F821 (GPAW's config defines `libraries`)
