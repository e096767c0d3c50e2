"""Accounts: users, API keys, sign-in sessions, and who is asking (the access rules)."""
