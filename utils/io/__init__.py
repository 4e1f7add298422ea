"""Files: image reading and writing, atomic writes (and the one JSON writer), checkpoints, run
folders."""
