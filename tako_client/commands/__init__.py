"""Commands of the tako CLI; each module exposes ``register(app)``."""
