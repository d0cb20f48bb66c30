"""The long-running service: callback routes, the jobs API, and the workers that act on what arrives."""
