"""Custom code: bundled at save, trust-gated and isolated at load.

``bundle``: which modules and definitions the saved objects need, and how they are imported
again; ``source``: rebuilding definitions from ``__main__`` or a notebook as one module;
``diagnose``: every part of an object that cannot be stored, found before anything is written.
"""
