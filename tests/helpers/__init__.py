"""Small real modules the code-fingerprint tests fingerprint (project-local code)."""
