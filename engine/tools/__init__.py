"""Mock server, synthetic data, benchmark and demo: never imported by the engine itself."""
