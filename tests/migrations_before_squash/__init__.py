"""The migrations 0001-0015 of before the squash, as they were at commit e7a618a.

tests/test_migrations.py migrates a scratch database with them (through
tests/settings_for_migrations.py), upgrades it to the squashed history and
compares the schema with that of a fresh install. Only the paths the later
ones import the earlier ones by were changed (from ``django_pgjobs.migrations``).
"""
