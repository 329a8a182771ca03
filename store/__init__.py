"""The one place skiplock talks to PostgreSQL: connections, migrations, every SQL statement."""
