"""FireTasks: thin translators between Firework specs / the database and ``nft_fw``.

A task's import path is database schema: FireWorks stores
``{{nft_fw.firetasks.<module>.<Class>}}`` in every Firework, so tasks are never
renamed or moved.

Importing this package makes FireWorks' id draws safe under concurrency in this process
(:func:`nft_fw.launchpad.connection.install_id_draws`). FireWorks imports a Firework's
tasks when it reads the Firework, so every client that checks out, adds or completes an
nft-fw Firework — plain ``rlaunch`` and ``qlaunch`` included — draws its ids safely.
"""

from nft_fw.launchpad.connection import install_id_draws

install_id_draws()
