"""hwnas.profiler"""
