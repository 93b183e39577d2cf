"""Everything the bot remembers, in one database (SQLite by default, PostgreSQL by URL).

Commands, views and services never write SQL; they call the small functions of this package, each taking an
`AsyncSession` first and leaving the transaction to the caller (`async with sessions.begin() as s`, or
`db.transaction(sessions, fn, ...)` to retry a unit of work when the database is busy).

    db          make_engine, make_sessions, transaction, ping: opening the database safely
    models      the tables (users, presets, default_presets, jobs, guild_settings, moderation_items, audit_log)
    options     the option keys and their validation (shared by presets, guild defaults, jobs)
    presets     save/get/list/rename/delete, default preset, JSON export/import, infotext import
    jobs        create, transition (checked state machine), mark_posted, unfinished() for restart recovery
    guilds      guild settings: moderation, words, caps, allowed models/VAEs, NSFW policy, defaults
    moderation  review items and the audit log
    migrate     Alembic upgrade/downgrade/check from code
    errors      StoreError and its kinds, each with a message fit for a user

No Discord and no torch here (a test checks the imports).
"""
