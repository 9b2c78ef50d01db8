"""What modelsafe checks about a model besides its bytes.

``environment``: the fingerprint captured at save and compared at load; ``verify``: the
verification sample replayed and compared; ``schema``: the input schema and the guard
``Bundle.predict`` runs; ``data``: the codec that stores samples without pickle.
"""
