"""Security: alerts on database sessions (``alerts``, ``rules``). The key management, access, privacy-rights
and audit parts of the security framework come here too."""
