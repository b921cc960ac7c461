"""The compiled media core (Cython). Each module has a plain-Python twin in ``engine._pure``."""
