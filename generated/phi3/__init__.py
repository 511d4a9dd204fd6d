"""Generated model package: see the modular file for the source."""
