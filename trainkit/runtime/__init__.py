"""The process and its devices: the mesh, signals, profiling."""
