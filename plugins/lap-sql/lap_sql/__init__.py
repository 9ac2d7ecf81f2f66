"""SessionStore for LAP on piccolo: SQLite and PostgreSQL."""
