"""The compiled hot paths (Cython). Each module has a plain-Python twin in ``engine._pure``."""
