"""The origin: sources (Subversion), the build rule, the sync worker that signs, and audit."""
