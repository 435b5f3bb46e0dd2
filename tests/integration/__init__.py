"""`make integration`: openai2 against software nobody here wrote (real proxies, the official SDK
as an oracle), property tests, faults, load, data safety and key hygiene.

Runs with the development venv `.venv-integration/` (openai, hypothesis); never imported by
`make test`, which stays standard-library only.
"""
