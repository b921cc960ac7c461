"""Plain-Python twins of ``engine._native``: the same names and signatures, slow on purpose.

They are the reference the native modules are tested against, and what runs with
``VOICE_ENGINE_IMPL=python``.
"""
