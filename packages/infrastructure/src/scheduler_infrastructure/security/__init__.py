"""Security adapters: password hashing (argon2id) and, later, token signing."""
