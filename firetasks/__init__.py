"""FireTasks: thin translators between Firework specs / the database and ``nft_fw``.

A task's import path is database schema: FireWorks stores
``{{nft_fw.firetasks.<module>.<Class>}}`` in every Firework, so tasks are never
renamed or moved.
"""
