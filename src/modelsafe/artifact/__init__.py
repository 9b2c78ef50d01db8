"""The artifact container: reading and writing its members, the manifest, and integrity.

``reader`` opens a single ``.msafe`` file (an aligned zip) or a folder; ``writer`` writes one
atomically through ``targets`` and ``zipwrite``; ``integrity`` checks every member's size and
SHA-256 before anything is deserialized; ``manifest`` is the typed ``modelsafe.json``;
``threads`` holds the worker threads saves and loads share. Nothing here knows a framework.
"""
