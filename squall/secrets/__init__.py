"""Secrets: variables, connections, the secrets backends that look them up, Fernet
encryption of what is stored, and the masker that keeps secret values out of logs. Low
enough in the layers that the SDK's templating and hooks and the worker reach them."""
