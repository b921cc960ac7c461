"""`voice-engine bench`: the load generator, its measurements and its report."""
