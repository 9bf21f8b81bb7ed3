"""LIBERO backend: the Spatial/Object/Goal/10/90 suites as `rlinf/LIBERO-*` gymnasium ids.

`env.LiberoEnv` is one task in this process; `vector_env.make_libero_vector_env` (the ids' vector
entry point) runs them in subprocesses. Importing this package imports no simulator.
"""
