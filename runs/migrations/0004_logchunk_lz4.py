"""Log chunks are large text values that PostgreSQL TOAST-compresses on insert; lz4 compresses
several times faster than the default pglz, which matters for log ingestion. Skipped on SQLite
and on a PostgreSQL built without lz4."""

from django.db import migrations

LZ4 = """
DO $$
BEGIN
    ALTER TABLE runs_logchunk ALTER COLUMN text SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value OR syntax_error THEN
    RAISE NOTICE 'lz4 not available; log chunks keep the default compression';
END $$;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(LZ4)


class Migration(migrations.Migration):
    dependencies = [("runs", "0003_task_kinds")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
